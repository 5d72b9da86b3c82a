//! Drives a target with a frame pool: closed loop (a fixed number of requests
//! in flight, each answer immediately replaced) or open loop (requests sent
//! on a fixed schedule whatever the answers do).
//!
//! Open-loop latency counts from each request's *intended* send time, not
//! from when it was actually written: a stall in the daemon (or in this
//! process) is charged to every request it delayed, as in wrk2, so
//! coordinated omission cannot hide queueing.
//!
//! The load generator shares the machine with the daemon, so the hot loops
//! avoid work: frames are prepared (`FramePool`), answers are only verified
//! and tallied (`kms_proto::tally_response`), latencies go to a thread-local
//! histogram merged every 100 ms, and the closed loop uses one thread per
//! connection with one blocking read and one non-blocking send per wake-up.
//!
//! The loops are the same for both protocols (`Wire`): kmsd's binary
//! frames, whose answers carry the request id (the closed loop's slot), and
//! AWS's HTTP API (`--protocol http`, [`run_http`]), whose answers come
//! back in the order sent and are matched by position, like the echo
//! server's.

use crate::http::HttpPool;
use crate::report::Progress;
use crate::run::{LoadModel, Protocol, RunResult, TargetKind};
use crate::workload::FramePool;
use anyhow::{anyhow, bail, Context as _};
use hdrhistogram::Histogram;
use kms_proto::frame::peek_len;
use kmsd::identity::Identity;
use kmsd::service::Service;
use parking_lot::Mutex;
use rustix::net::RecvFlags;
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Who answers the frames.
pub enum Target<'a> {
    /// kmsd (or anything speaking the protocol) at this socket.
    Daemon(&'a Path),
    /// The echo server at this socket: answers are the requests, in order.
    Echo(&'a Path),
    /// The service in this process, called on `connections` threads.
    InProcess(&'a Service),
}

impl Target<'_> {
    fn kind(&self) -> TargetKind {
        match self {
            Target::Daemon(_) => TargetKind::Daemon,
            Target::Echo(_) => TargetKind::Echo,
            Target::InProcess(_) => TargetKind::InProcess,
        }
    }
}

/// How long and how hard.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Closed or open loop.
    pub model: LoadModel,
    /// Load offered before the measured window (not recorded).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Print a progress line every second.
    pub progress: bool,
    /// The target's pid, to report its CPU and RSS (found from the socket's
    /// SO_PEERCRED when None).
    pub target_pid: Option<i32>,
}

/// Shortest sleep of the open loop's writer: requests go out in bursts at
/// most this often per connection (wrk2's timers tick every millisecond).
/// Every burst costs a wake-up of the writer, of the target and of the
/// reader (~5 µs each on a VM); at 50 µs the open loop at half the daemon's
/// peak kept the two cores ~80% busy and its tail was mostly queueing
/// behind those wake-ups. The added latency, up to this much from a
/// request's intended time, is the same for every target.
const MIN_SLEEP: Duration = Duration::from_micros(100);

/// How long to wait for answers still in flight after the window.
const DRAIN: Duration = Duration::from_secs(10);

/// Largest answer frame accepted (the protocol's default frame limit).
const MAX_FRAME: usize = kms_proto::frame::DEFAULT_MAX_FRAME;

/// State the connection threads share with the coordinating thread.
struct Shared {
    /// Start of the measured window and its end.
    window: (Instant, Instant),
    /// Measured operations and failed operations so far (for progress).
    ops: AtomicU64,
    failed: AtomicU64,
    /// Latencies recorded so far, merged from the threads every 100 ms.
    latency: Mutex<Histogram<u64>>,
    /// Set when any thread fails: everyone stops, the run reports it.
    abort: AtomicBool,
    error: Mutex<Option<anyhow::Error>>,
}

/// What one connection thread counted.
struct Tally {
    requests: u64,
    operations: u64,
    errors: BTreeMap<String, u64>,
    local: Histogram<u64>,
    last_flush: Instant,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            operations: 0,
            errors: BTreeMap::new(),
            local: RunResult::new_histogram(),
            last_flush: Instant::now(),
        }
    }

    fn record(&mut self, shared: &Shared, latency: Duration, items: u64) {
        self.requests += 1;
        self.operations += items;
        self.local
            .saturating_record((latency.as_nanos() as u64).max(1));
        shared.ops.fetch_add(items, Ordering::Relaxed);
    }

    fn error(&mut self, shared: &Shared, name: &str, count: u64) {
        let name = if name.is_empty() { "(unnamed)" } else { name };
        match self.errors.get_mut(name) {
            Some(n) => *n += count,
            None => {
                self.errors.insert(name.to_owned(), count);
            }
        }
        shared.failed.fetch_add(count, Ordering::Relaxed);
    }

    /// Verifies and tallies one answer frame of `items` operations; errors
    /// count only if `measured` says the request belongs to the window.
    /// Returns the request id.
    fn answer(
        &mut self,
        shared: &Shared,
        frame: &[u8],
        items: u64,
        measured: impl Fn(u64) -> bool,
    ) -> anyhow::Result<u64> {
        let mut names: Vec<String> = Vec::new();
        let t = kms_proto::tally_response(frame, MAX_FRAME, |name| names.push(name.to_owned()))
            .map_err(|e| anyhow!("bad answer: {e}"))?;
        if !names.is_empty() && measured(t.request_id) {
            // A frame-level error stands for every item of the frame.
            let each = if t.frame_error { items } else { 1 };
            for name in &names {
                self.error(shared, name, each);
            }
        }
        Ok(t.request_id)
    }

    fn maybe_flush(&mut self, shared: &Shared, now: Instant) {
        if now.duration_since(self.last_flush) >= Duration::from_millis(100) {
            self.flush(shared, now);
        }
    }

    fn flush(&mut self, shared: &Shared, now: Instant) {
        if !self.local.is_empty() {
            shared
                .latency
                .lock()
                .add(&self.local)
                .expect("same histogram bounds");
            self.local.reset();
        }
        self.last_flush = now;
    }
}

impl Shared {
    fn fail(&self, e: anyhow::Error) {
        let mut slot = self.error.lock();
        if slot.is_none() {
            *slot = Some(e);
        }
        self.abort.store(true, Ordering::Relaxed);
    }

    fn in_window(&self, t: Instant) -> bool {
        t >= self.window.0 && t < self.window.1
    }
}

/// Runs `pool` against `target` and returns what the measured window saw.
pub fn run(
    target: Target<'_>,
    pool: &FramePool,
    workload: &str,
    opts: &RunOptions,
) -> anyhow::Result<RunResult> {
    if matches!(opts.model, LoadModel::Open { .. }) && matches!(target, Target::InProcess(_)) {
        bail!("the in-process baseline runs closed loop only");
    }
    let socket = match target {
        Target::Daemon(p) | Target::Echo(p) => Some(p),
        Target::InProcess(_) => None,
    };
    let kind = target.kind();
    drive(
        kind,
        Protocol::Binary,
        pool.items,
        socket,
        workload,
        opts,
        |c, connections, shared| {
            let first = c * pool.len() / connections;
            let frames = Frames {
                pool,
                echo: matches!(target, Target::Echo(_)),
            };
            match (&target, &opts.model) {
                (Target::Daemon(p) | Target::Echo(p), LoadModel::Closed { pipeline, .. }) => {
                    closed_socket(p, &frames, *pipeline, first, shared)
                }
                (Target::InProcess(svc), _) => in_process(svc, pool, first, shared),
                (Target::Daemon(p) | Target::Echo(p), LoadModel::Open { rate, .. }) => {
                    open_socket(p, &frames, rate / connections as f64, first, shared)
                }
            }
        },
    )
}

/// Runs `pool` against kmsd's HTTP API at `socket` (AWS JSON 1.1 over
/// HTTP/1.1, keep-alive; `--pipeline` requests in flight per connection
/// in the closed loop) and returns what the measured window saw.
pub fn run_http(
    socket: &Path,
    pool: &HttpPool,
    workload: &str,
    opts: &RunOptions,
) -> anyhow::Result<RunResult> {
    let kind = TargetKind::Daemon;
    drive(
        kind,
        Protocol::Http,
        1,
        Some(socket),
        workload,
        opts,
        |c, connections, shared| {
            let first = c * pool.len() / connections;
            let requests = HttpRequests { pool };
            match &opts.model {
                LoadModel::Closed { pipeline, .. } => {
                    closed_socket(socket, &requests, *pipeline, first, shared)
                }
                LoadModel::Open { rate, .. } => {
                    open_socket(socket, &requests, rate / connections as f64, first, shared)
                }
            }
        },
    )
}

/// What both protocols share: checks the model, runs `connection` on one
/// thread per connection (connection number, connections, shared state),
/// reads the CPU of both processes at the window's edges, and adds up the
/// tallies.
fn drive(
    kind: TargetKind,
    protocol: Protocol,
    batch: usize,
    socket: Option<&Path>,
    workload: &str,
    opts: &RunOptions,
    connection: impl Fn(usize, usize, &Shared) -> anyhow::Result<Tally> + Sync,
) -> anyhow::Result<RunResult> {
    let connections = match opts.model {
        LoadModel::Closed {
            connections,
            pipeline,
        } => {
            if pipeline == 0 || pipeline > 1 << 16 {
                bail!("--pipeline must be 1..=65536");
            }
            connections
        }
        LoadModel::Open { connections, rate } => {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("--rate must be above 0");
            }
            connections
        }
    };
    if connections == 0 {
        bail!("--connections must be at least 1");
    }
    let start = Instant::now();
    let window = (start + opts.warmup, start + opts.warmup + opts.duration);
    let shared = Shared {
        window,
        ops: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        latency: Mutex::new(RunResult::new_histogram()),
        abort: AtomicBool::new(false),
        error: Mutex::new(None),
    };
    let mut target_pid = opts.target_pid;
    if target_pid.is_none() {
        if let Some(p) = socket {
            target_pid = UnixStream::connect(p)
                .ok()
                .and_then(|s| crate::target::peer_pid(&s));
        }
    }
    let (tallies, before, after) = std::thread::scope(|s| -> anyhow::Result<_> {
        let handles = (0..connections)
            .map(|c| {
                let (shared, connection) = (&shared, &connection);
                // Named (the connection's reader, and its writer in open
                // loop), so profiles and `perf sched` tell them apart.
                let thread = std::thread::Builder::new().name(format!("lg-conn-{c}"));
                thread.spawn_scoped(s, move || {
                    connection(c, connections, shared).unwrap_or_else(|e| {
                        shared.fail(e);
                        Tally::new()
                    })
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .context("starting a connection thread")?;
        let (before, after) = watch(&shared, opts, target_pid);
        let tallies: Vec<Tally> = handles
            .into_iter()
            .map(|h| h.join().expect("connection thread panicked"))
            .collect();
        Ok((tallies, before, after))
    })?;
    if let Some(e) = shared.error.lock().take() {
        return Err(e);
    }
    let mut latency = shared.latency.into_inner();
    let mut result = RunResult {
        workload: workload.to_owned(),
        target: kind,
        protocol,
        model: opts.model.clone(),
        batch,
        duration_secs: opts.duration.as_secs_f64(),
        requests: 0,
        operations: 0,
        errors: BTreeMap::new(),
        latency: RunResult::new_histogram(),
        loadgen_cpu_secs: after.0.cpu_secs - before.0.cpu_secs,
        target_cpu_secs: match (before.1, after.1) {
            (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
            _ => None,
        },
        target_rss_bytes: after.1.map(|a| a.rss_bytes),
        target_peak_rss_bytes: after.1.map(|a| a.peak_rss_bytes),
    };
    for t in tallies {
        result.requests += t.requests;
        result.operations += t.operations;
        for (name, n) in t.errors {
            *result.errors.entry(name).or_default() += n;
        }
        latency.add(&t.local).expect("same histogram bounds");
    }
    result.latency = latency;
    Ok(result)
}

type Stats = (crate::target::ProcStat, Option<crate::target::ProcStat>);

/// The coordinating thread: reads CPU at the window's edges and prints
/// progress once a second.
fn watch(shared: &Shared, opts: &RunOptions, pid: Option<i32>) -> (Stats, Stats) {
    let stats = || {
        (
            crate::target::proc_stat(None).unwrap_or_default(),
            pid.and_then(|p| crate::target::proc_stat(Some(p))),
        )
    };
    let is_tty = rustix::termios::isatty(std::io::stderr());
    let mut progress = opts.progress.then(|| Progress::new(is_tty));
    let sleep_until = |t: Instant| {
        while !shared.abort.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= t {
                return;
            }
            std::thread::sleep((t - now).min(Duration::from_millis(50)));
        }
    };
    if progress.is_some() && !opts.warmup.is_zero() {
        eprintln!("warm-up {:.1} s", opts.warmup.as_secs_f64());
    }
    sleep_until(shared.window.0);
    let before = stats();
    let mut last = (shared.window.0, shared.ops.load(Ordering::Relaxed));
    let mut tick = shared.window.0;
    loop {
        tick = (tick + Duration::from_secs(1)).min(shared.window.1);
        sleep_until(tick);
        if shared.abort.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let ops = shared.ops.load(Ordering::Relaxed);
        if let Some(p) = progress.as_mut() {
            let rate = (ops - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            let p99 = shared.latency.lock().value_at_quantile(0.99);
            p.emit(
                now.duration_since(shared.window.0).as_secs_f64(),
                rate,
                shared.failed.load(Ordering::Relaxed),
                p99,
            );
        }
        last = (now, ops);
        if tick >= shared.window.1 {
            break;
        }
    }
    let after = stats();
    if let Some(p) = progress.as_mut() {
        p.finish();
    }
    (before, after)
}

fn id_for_slot(generation: u64, slot: usize) -> u64 {
    (generation << 16) | slot as u64
}

/// A protocol as the socket loops see it: how a request is put on the
/// wire and how an answer is taken off it.
trait Wire: Sync {
    /// Operations per request.
    fn items(&self) -> u64;

    /// Whether answers come back in the order the requests were sent and
    /// carry no request id, so that they are matched by position
    /// (HTTP/1.1, the echo server), rather than by the id in each.
    fn in_order(&self) -> bool;

    /// Appends request `i` (mod the pool) with request id `id` (where the
    /// protocol carries one) to `out`.
    fn put(&self, i: usize, id: u64, out: &mut Vec<u8>);

    /// Takes the next whole answer off `rx` and tallies its errors (only if
    /// `measured` says its request belongs to the window). Returns the
    /// request id it answers: the one in it, or for in-order protocols
    /// `expected`, the id of the oldest request in flight. `None` when no
    /// whole answer is buffered.
    fn take(
        &self,
        rx: &mut RecvBuf,
        tally: &mut Tally,
        shared: &Shared,
        expected: u64,
        measured: impl Fn(u64) -> bool,
    ) -> anyhow::Result<Option<u64>>;
}

/// kmsd's binary frames (or the echo server's copies of them).
struct Frames<'a> {
    pool: &'a FramePool,
    /// Answers are the requests, in order: not verified.
    echo: bool,
}

impl Wire for Frames<'_> {
    fn items(&self) -> u64 {
        self.pool.items as u64
    }

    fn in_order(&self) -> bool {
        self.echo
    }

    fn put(&self, i: usize, id: u64, out: &mut Vec<u8>) {
        self.pool.put(i, id, out);
    }

    fn take(
        &self,
        rx: &mut RecvBuf,
        tally: &mut Tally,
        shared: &Shared,
        expected: u64,
        measured: impl Fn(u64) -> bool,
    ) -> anyhow::Result<Option<u64>> {
        let Some(frame) = rx.next_frame()? else {
            return Ok(None);
        };
        if self.echo {
            return Ok(Some(expected));
        }
        tally
            .answer(shared, frame, self.items(), measured)
            .map(Some)
    }
}

/// AWS's HTTP API: whole HTTP/1.1 requests, answers in order.
struct HttpRequests<'a> {
    pool: &'a HttpPool,
}

impl Wire for HttpRequests<'_> {
    fn items(&self) -> u64 {
        1
    }

    fn in_order(&self) -> bool {
        true
    }

    fn put(&self, i: usize, _id: u64, out: &mut Vec<u8>) {
        self.pool.put(i, out);
    }

    fn take(
        &self,
        rx: &mut RecvBuf,
        tally: &mut Tally,
        shared: &Shared,
        expected: u64,
        measured: impl Fn(u64) -> bool,
    ) -> anyhow::Result<Option<u64>> {
        let Some(answer) = crate::http::parse_answer(rx.unread())? else {
            return Ok(None);
        };
        if !answer.success()? && measured(expected) {
            tally.error(shared, &answer.error_name(), 1);
        }
        if answer.close {
            // kmsd closes only after a request it could not read whole: a
            // fault of the load generator's, not load to measure.
            bail!(
                "the daemon closed the connection after answering {} {}",
                answer.status,
                answer.error_name()
            );
        }
        let len = answer.len;
        rx.consume(len);
        Ok(Some(expected))
    }
}

/// Closed loop on one connection: `pipeline` requests in flight, each
/// answer replaced by the next request at once. The binary protocol's
/// request id carries the slot, so its answers may come back in any order;
/// in-order protocols (HTTP/1.1, the echo server) keep a FIFO of slots and
/// match answers by position.
fn closed_socket(
    path: &Path,
    wire: &impl Wire,
    pipeline: usize,
    first: usize,
    shared: &Shared,
) -> anyhow::Result<Tally> {
    let stream =
        UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))?;
    let mut tally = Tally::new();
    let mut cursor = first;
    let mut sent_at = vec![Instant::now(); pipeline];
    let mut order: VecDeque<usize> = VecDeque::with_capacity(pipeline);
    let mut generation = 0u64;
    let mut out = Vec::with_capacity(64 << 10);
    let mut pending = 0; // bytes of `out` already sent
    let now = Instant::now();
    for (slot, at) in sent_at.iter_mut().enumerate() {
        wire.put(cursor, id_for_slot(generation, slot), &mut out);
        *at = now;
        order.push_back(slot);
        cursor += 1;
    }
    let mut inflight = pipeline;
    let mut rx = RecvBuf::new();
    let mut stopping = false;
    let deadline = shared.window.1 + DRAIN;
    let items = wire.items();
    loop {
        // Send what is queued without blocking; wait for the socket only
        // when nothing can be read either, so the two sides never deadlock
        // on full buffers.
        if pending < out.len() {
            pending += send_some(&stream, &out[pending..])?;
            if pending == out.len() {
                out.clear();
                pending = 0;
            } else if pending >= out.len() / 2 {
                // Drop the sent prefix now: new requests are appended
                // while a slow target drains this buffer, and a buffer
                // that never empties entirely would grow without bound
                // (the load generator then spends its time page-faulting
                // in fresh memory). Moving the unsent half costs at most
                // as much as the bytes already sent.
                out.drain(..pending);
                pending = 0;
            }
        }
        if pending < out.len() {
            wait_readable_or_writable(&stream)?;
            if !readable_now(&stream)? {
                continue;
            }
        }
        match rx.try_fill(&stream)? {
            Some(0) => bail!("the target closed the connection"),
            Some(_) => {}
            // Nothing yet: wait for answers, then go round (the checks
            // below still run, so a silent target is noticed).
            None => {
                wait_readable(&stream, WAIT_TICK)?;
            }
        }
        let now = Instant::now();
        let measuring = shared.in_window(now);
        loop {
            let oldest = order.front().map_or(0, |&s| s as u64);
            let Some(id) = wire.take(&mut rx, &mut tally, shared, oldest, |_| measuring)? else {
                break;
            };
            let slot = if wire.in_order() {
                order
                    .pop_front()
                    .context("the target answered more requests than were sent")?
            } else {
                let slot = (id & 0xffff) as usize;
                if slot >= pipeline {
                    bail!("answer to a request id that was never sent");
                }
                slot
            };
            if measuring {
                tally.record(shared, now - sent_at[slot], items);
            }
            if stopping || shared.abort.load(Ordering::Relaxed) {
                inflight -= 1;
            } else {
                generation += 1;
                wire.put(cursor, id_for_slot(generation, slot), &mut out);
                sent_at[slot] = now;
                if wire.in_order() {
                    order.push_back(slot);
                }
                cursor += 1;
            }
        }
        tally.maybe_flush(shared, now);
        if now >= shared.window.1 {
            stopping = true;
        }
        if stopping && inflight == 0 {
            break;
        }
        if now > deadline {
            *tally.errors.entry("NoAnswer".to_owned()).or_default() += inflight as u64 * items;
            break;
        }
    }
    tally.flush(shared, Instant::now());
    Ok(tally)
}

fn send_some(stream: &UnixStream, bytes: &[u8]) -> anyhow::Result<usize> {
    match rustix::net::send(stream, bytes, rustix::net::SendFlags::DONTWAIT) {
        Ok(n) => Ok(n),
        Err(rustix::io::Errno::AGAIN) => Ok(0),
        Err(e) => Err(anyhow!("sending to the target: {e}")),
    }
}

fn wait_readable_or_writable(stream: &UnixStream) -> anyhow::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(stream, PollFlags::IN | PollFlags::OUT)];
    poll(&mut fds, None)?;
    Ok(())
}

/// Longest single wait for answers, so that readers notice the end of a
/// run or a silent target.
const WAIT_TICK: Duration = Duration::from_millis(100);

/// Waits until answers arrive on `stream` or `timeout` passes.
///
/// Readers wait in poll for POLLIN rather than asleep in a blocking recv:
/// a thread asleep in recv on a Unix socket is woken by every event on it,
/// including the write-space wake-up the kernel sends each time the target
/// consumes one of our requests, while poll's wake-ups are filtered by
/// event. Those spurious wake-ups cost both sides a context switch per
/// request burst and are not part of what is being measured.
fn wait_readable(stream: &UnixStream, timeout: Duration) -> anyhow::Result<()> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    let timeout = Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(anyhow!("waiting for answers: {e}")),
    }
}

fn readable_now(stream: &UnixStream) -> anyhow::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(stream, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    Ok(poll(&mut fds, Some(&zero))? > 0)
}

/// Open loop on one connection: a writer thread sends request i at
/// `start + i / rate` (all overdue ones at once when it is late), a reader
/// records each answer's latency from that intended time. Request ids are
/// the sequence numbers (in-order protocols: the answers' positions), so
/// the intended time needs no shared state.
fn open_socket(
    path: &Path,
    wire: &impl Wire,
    rate: f64,
    first: usize,
    shared: &Shared,
) -> anyhow::Result<Tally> {
    let stream =
        UnixStream::connect(path).with_context(|| format!("connecting to {}", path.display()))?;
    let mut writer = stream.try_clone()?;
    let mut reader = stream;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let intended = |i: u64| t0 + interval.mul_f64(i as f64);
    let sent = AtomicU64::new(0);
    let writer_done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let name = format!("{}-w", std::thread::current().name().unwrap_or("lg"));
        let writer_thread = std::thread::Builder::new().name(name);
        let w = writer_thread.spawn_scoped(s, || -> anyhow::Result<()> {
            let mut out = Vec::with_capacity(64 << 10);
            let mut i = 0u64;
            while !shared.abort.load(Ordering::Relaxed) {
                let now = Instant::now();
                while intended(i) <= now && intended(i) < shared.window.1 {
                    wire.put(first + i as usize, i, &mut out);
                    i += 1;
                }
                if !out.is_empty() {
                    writer.write_all(&out)?;
                    out.clear();
                    sent.store(i, Ordering::Release);
                }
                let next = intended(i);
                if next >= shared.window.1 {
                    break;
                }
                // Sleep at least MIN_SLEEP: at hundreds of thousands of
                // requests per second, waking for each one would cost the
                // load generator more CPU than the daemon spends answering.
                // Requests sent late are charged from their intended time,
                // to the daemon and the echo baseline alike.
                let now = Instant::now();
                if next > now {
                    std::thread::sleep((next - now).max(MIN_SLEEP));
                }
            }
            writer_done.store(true, Ordering::Release);
            Ok(())
        })?;
        let r = open_reader(&mut reader, wire, shared, &intended, &sent, &writer_done);
        if r.is_err() {
            shared.abort.store(true, Ordering::Relaxed);
        }
        let wr = w.join().expect("writer thread panicked");
        let tally = r?;
        wr?;
        Ok(tally)
    })
}

fn open_reader(
    reader: &mut UnixStream,
    wire: &impl Wire,
    shared: &Shared,
    intended: &dyn Fn(u64) -> Instant,
    sent: &AtomicU64,
    writer_done: &AtomicBool,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new();
    let mut rx = RecvBuf::new();
    let mut received = 0u64;
    let deadline = shared.window.1 + DRAIN;
    let items = wire.items();
    loop {
        if writer_done.load(Ordering::Acquire) && received >= sent.load(Ordering::Acquire) {
            break;
        }
        if shared.abort.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() > deadline {
            let missing = sent.load(Ordering::Acquire) - received;
            tally.error(shared, "NoAnswer", missing * items);
            break;
        }
        match rx.try_fill(reader)? {
            Some(0) => bail!("the target closed the connection"),
            Some(_) => {}
            // A bounded wait lets the reader notice the end of the run.
            None => {
                wait_readable(reader, WAIT_TICK)?;
                continue;
            }
        }
        let now = Instant::now();
        while let Some(id) = wire.take(&mut rx, &mut tally, shared, received, |id| {
            shared.in_window(intended(id))
        })? {
            received += 1;
            let at = intended(id);
            if shared.in_window(at) {
                tally.record(shared, now.saturating_duration_since(at), items);
            }
        }
        tally.maybe_flush(shared, now);
    }
    tally.flush(shared, Instant::now());
    Ok(tally)
}

/// A receive buffer that answers are split from in place.
struct RecvBuf {
    buf: Vec<u8>,
    start: usize,
    filled: usize,
}

impl RecvBuf {
    fn new() -> RecvBuf {
        RecvBuf {
            buf: vec![0u8; 1 << 20],
            start: 0,
            filled: 0,
        }
    }

    /// Reads once from `stream` without blocking into the free space, first
    /// making room (moving a partial answer to the front, doubling the
    /// buffer when an answer fills it whole). Returns the bytes read (0:
    /// the target closed), or `None` if nothing has arrived. MSG_DONTWAIT
    /// rather than O_NONBLOCK: the open loop's writer shares the file
    /// description and writes blocking.
    fn try_fill(&mut self, stream: &UnixStream) -> anyhow::Result<Option<usize>> {
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
        }
        if self.filled == self.buf.len() {
            self.buf.copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
            // One answer fills the buffer: grow (whatever the protocol;
            // answers are bounded by MAX_FRAME and http::MAX_BODY).
            if self.filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        match rustix::net::recv(stream, &mut self.buf[self.filled..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => {
                self.filled += n;
                Ok(Some(n))
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Ok(None),
            Err(e) => Err(anyhow!("receiving from the target: {e}")),
        }
    }

    /// The bytes received and not yet taken.
    fn unread(&self) -> &[u8] {
        &self.buf[self.start..self.filled]
    }

    /// Marks the first `n` unread bytes as taken.
    fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.filled - self.start);
        self.start += n;
    }

    /// The next whole frame's payload, if one has arrived.
    fn next_frame(&mut self) -> anyhow::Result<Option<&[u8]>> {
        let Some(len) = peek_len(&self.buf[self.start..self.filled]) else {
            return Ok(None);
        };
        if len > MAX_FRAME {
            bail!("answer frame of {len} bytes exceeds the frame limit");
        }
        if self.filled - self.start < 4 + len {
            return Ok(None);
        }
        let at = self.start + 4;
        self.start = at + len;
        Ok(Some(&self.buf[at..at + len]))
    }
}

/// The in-process baseline: the same frames through `kmsd::wire::handle_frame`
/// on this thread, one after another (a closed loop with one in flight per
/// thread), answers tallied like the daemon's.
fn in_process(
    svc: &Service,
    pool: &FramePool,
    first: usize,
    shared: &Shared,
) -> anyhow::Result<Tally> {
    let peer = Identity::local(
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
        std::process::id() as i32,
    );
    let mut tally = Tally::new();
    let mut frame = Vec::new();
    let mut out = Vec::new();
    let mut cursor = first;
    loop {
        frame.clear();
        pool.put(cursor, cursor as u64, &mut frame);
        cursor += 1;
        out.clear();
        let t = Instant::now();
        kmsd::wire::handle_frame(svc, &frame[4..], &peer, &mut out);
        let now = Instant::now();
        let measuring = shared.in_window(now);
        tally.answer(shared, &out[4..], pool.items as u64, |_| measuring)?;
        if measuring {
            tally.record(shared, now - t, pool.items as u64);
        }
        tally.maybe_flush(shared, now);
        if now >= shared.window.1 || shared.abort.load(Ordering::Relaxed) {
            break;
        }
    }
    tally.flush(shared, Instant::now());
    Ok(tally)
}
