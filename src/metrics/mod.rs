//! Metrics: what the daemon counts, where it is kept, and how it is read
//! (docs/metrics.md lists every metric).
//!
//! Everything goes through the `metrics` crate's facade into one recorder,
//! `metrics-exporter-prometheus`'s, installed by [`install`] at start
//! whether or not the Prometheus listener is on: the status operation
//! (GetStatus, `kmsctl status`) reads the same recorder. Other modules
//! (the audit log's `kmsd_audit_*`, the quotas' `kmsd_throttled_total`)
//! emit with the macros and show up in both without this module knowing
//! them.
//!
//! **The data path** never looks a metric up by name: the handles of the
//! per-request metrics are registered once, in tables indexed by
//! operation ([`kms_proto::Operation::index`]) and by exception
//! ([`ErrorKind`] as an index), so counting an item is an array index and
//! an atomic add, and timing a frame is two reads of the TSC clock
//! (`quanta`) and one histogram push. A batch's items of one operation are
//! counted with one add. Handles of (operation, exception) pairs and of
//! per-operation latencies are registered when first used, so a scrape
//! shows what happened rather than 40 x 27 zeros.
//!
//! **Gauges** of queue depths, cache size, HSM health and the like are not
//! updated per request: the structures that own them register a
//! [`Sampler`] that sets them from what they hold, called just before a
//! scrape or a status answer is rendered.
//!
//! **Upkeep**: the exporter keeps histogram samples in a lock-free bucket
//! until they are folded into their summaries; the `kmsd-metrics` thread
//! folds them every second (and serves the listener, `listener.rs`), so
//! their memory stays bounded whether or not anyone scrapes.

pub(crate) mod listener;
pub mod snapshot;

use kms_proto::ErrorKind;
use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock};

/// Quantiles GetStatus shows of every histogram: p50, p90, p99, p99.9
/// (estimated from the buckets), beside the maximum.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Upper bounds of the latency buckets, seconds: 1 us to 16 s in steps of
/// sqrt(2) (49 buckets), so a quantile read from them is within about 20%
/// (GetStatus interpolates inside the bucket, as PromQL's
/// histogram_quantile does). Histograms rather than the exporter's
/// summaries: a summary's sketch (metrics-util's DDSketch, 32,768 bins at
/// 0.01%) spans under three decades, so one slow frame among fast ones
/// pushes the fast ones' quantiles up (p50 of 1..1000 us came out 980 us).
fn latency_buckets() -> Vec<f64> {
    (0..49).map(|i| 1e-6 * 2f64.powf(f64::from(i) / 2.0)).collect()
}

/// Upper bounds of the loader's keys-per-batch buckets.
const BATCH_BUCKETS: [f64; 12] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// Metric names, one place (docs/metrics.md has their meaning).
pub mod names {
    /// Seconds since the daemon started (gauge).
    pub const UPTIME: &str = "kmsd_uptime_seconds";
    /// Always 1, labelled with the version (gauge).
    pub const BUILD_INFO: &str = "kmsd_build_info";
    /// Requests by operation, one per batch item (counter).
    pub const REQUESTS: &str = "kmsd_requests_total";
    /// Failed requests by operation and exception (counter).
    pub const ERRORS: &str = "kmsd_errors_total";
    /// Frame service time by operation, seconds (histogram).
    pub const DURATION: &str = "kmsd_request_duration_seconds";
    /// Longest frame service time since start, by operation, seconds (gauge).
    pub const DURATION_MAX: &str = "kmsd_request_duration_max_seconds";
    /// Frames waiting in a queue, by queue (gauge).
    pub const QUEUE_DEPTH: &str = "kmsd_queue_depth";
    /// Frames refused ThrottlingException because a queue was full (counter).
    pub const OVERLOADED: &str = "kmsd_overloaded_total";
    /// Frames dropped because their connection had gone (counter).
    pub const DROPPED: &str = "kmsd_dropped_frames_total";
    /// Key lookups at admission that found the key cached (counter).
    pub const CACHE_HITS: &str = "kmsd_key_cache_hits_total";
    /// Key lookups at admission that did not (counter).
    pub const CACHE_MISSES: &str = "kmsd_key_cache_misses_total";
    /// Keys cached now (gauge).
    pub const CACHE_KEYS: &str = "kmsd_key_cache_keys";
    /// Batches of keys the loader read and unwrapped (counter).
    pub const LOADER_BATCHES: &str = "kmsd_key_loader_batches_total";
    /// Keys per loader batch (histogram).
    pub const LOADER_BATCH_KEYS: &str = "kmsd_key_loader_batch_keys";
    /// Keys the loader unwrapped (counter).
    pub const LOADER_LOADED: &str = "kmsd_key_loader_loaded_total";
    /// Key loads that failed (counter).
    pub const LOADER_FAILED: &str = "kmsd_key_loader_failed_total";
    /// Waiters answered at their deadline (counter).
    pub const LOADER_EXPIRED: &str = "kmsd_key_loader_expired_total";
    /// 1 while the HSM answers, 0 while it is down (gauge; PKCS#11 root only).
    pub const HSM_UP: &str = "kmsd_hsm_up";
    /// Successful rebuilds of the PKCS#11 context (counter).
    pub const HSM_REBUILDS: &str = "kmsd_hsm_rebuilds_total";
    /// Failed rebuild attempts (counter).
    pub const HSM_FAILED_REBUILDS: &str = "kmsd_hsm_failed_rebuilds_total";
    /// Calls refused at once while the HSM was down (counter).
    pub const HSM_FAST_FAILURES: &str = "kmsd_hsm_fast_failures_total";
    /// Connections open now (gauge).
    pub const CONNECTIONS_OPEN: &str = "kmsd_connections_open";
    /// Connections accepted (counter).
    pub const CONNECTIONS_ACCEPTED: &str = "kmsd_connections_accepted_total";
    /// Connections refused at accept, by reason (counter).
    pub const CONNECTIONS_REFUSED: &str = "kmsd_connections_refused_total";
    /// Items refused ThrottlingException by a quota, by principal
    /// (`uid:N`; `key:*` for per-key limits) and class (counter).
    pub const THROTTLED: &str = "kmsd_throttled_total";
}

/// The pseudo-operation of a frame refused whole before its operations were
/// known (it did not decode: bad flatbuffer, unknown version, batch over
/// the limit).
pub const FRAME: &str = "Frame";
/// The latency label of a batch whose items are not all one operation.
pub const MIXED: &str = "Mixed";

/// Operations and the two pseudo-operations: index of [`FRAME`] and
/// [`MIXED`] after the real ones.
const OPS: usize = kms_proto::Operation::NAMES.len();
/// Index of [`FRAME`] in the per-operation tables.
pub const FRAME_INDEX: usize = OPS;
/// Index of [`MIXED`] (latency only).
pub const MIXED_INDEX: usize = OPS + 1;
const SLOTS: usize = OPS + 2;
/// Exception kinds ([`ErrorKind::ALL`] plus `Unrecognized`).
const KINDS: usize = ErrorKind::ALL.len() + 1;

fn op_name(i: usize) -> &'static str {
    match i {
        FRAME_INDEX => FRAME,
        MIXED_INDEX => MIXED,
        i => kms_proto::Operation::NAMES[i],
    }
}

fn kind_index(k: ErrorKind) -> usize {
    // A fieldless enum: its discriminant is dense from 0.
    k as usize
}

/// Sets gauges (or absolute counters) from the structure that owns them,
/// just before a scrape or a status answer.
pub type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The recorder and the handles the daemon's own code uses.
pub struct Metrics {
    recorder: Arc<PrometheusRecorder>,
    handle: PrometheusHandle,
    started: std::time::Instant,
    requests: Box<[Counter]>,
    errors: Box<[[OnceLock<Counter>; KINDS]]>,
    latency: Box<[OnceLock<(Histogram, Gauge, std::sync::atomic::AtomicU64)>]>,
    cache_hits: Counter,
    cache_misses: Counter,
    loader_batches: Counter,
    loader_batch_keys: Histogram,
    connections_open: Gauge,
    connections_accepted: Counter,
    refused_full: Counter,
    refused_uid: Counter,
    samplers: Mutex<Vec<Sampler>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// Installs the daemon's recorder as the process's global one (once; later
/// calls return the same) and returns it. The daemon calls it at start;
/// without it (in-process tests, benches) the data path counts nothing.
pub fn install() -> &'static Metrics {
    GLOBAL.get_or_init(|| {
        let m = Metrics::new();
        // Set once: this OnceLock is the only caller. Another recorder set
        // by an embedding process wins; ours then only serves GetStatus.
        if metrics::set_global_recorder(Arc::clone(&m.recorder)).is_err() {
            tracing::warn!("a metrics recorder was already installed; kmsd's metrics stay its own");
        }
        m
    })
}

/// The installed metrics, if [`install`] ran.
#[inline]
pub fn get() -> Option<&'static Metrics> {
    GLOBAL.get()
}

impl Metrics {
    /// A recorder of its own (not installed globally): [`install`], and
    /// unit tests that need one apart from the process's.
    pub fn new() -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(names::DURATION.into()),
                &latency_buckets(),
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(names::LOADER_BATCH_KEYS.into()),
                    &BATCH_BUCKETS,
                )
            })
            .expect("non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        let recorder = Arc::new(recorder);
        let counter = |name: &'static str, labels: Vec<Label>| {
            recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
        };
        let requests = (0..SLOTS)
            .map(|i| counter(names::REQUESTS, vec![Label::new("operation", op_name(i))]))
            .collect();
        let m = Metrics {
            requests,
            errors: (0..SLOTS).map(|_| Default::default()).collect(),
            latency: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            cache_hits: counter(names::CACHE_HITS, vec![]),
            cache_misses: counter(names::CACHE_MISSES, vec![]),
            loader_batches: counter(names::LOADER_BATCHES, vec![]),
            loader_batch_keys: recorder
                .register_histogram(&Key::from_name(names::LOADER_BATCH_KEYS), &METADATA),
            connections_open: recorder
                .register_gauge(&Key::from_name(names::CONNECTIONS_OPEN), &METADATA),
            connections_accepted: counter(names::CONNECTIONS_ACCEPTED, vec![]),
            refused_full: counter(
                names::CONNECTIONS_REFUSED,
                vec![Label::new("reason", "max_connections")],
            ),
            refused_uid: counter(
                names::CONNECTIONS_REFUSED,
                vec![Label::new("reason", "max_connections_per_uid")],
            ),
            samplers: Mutex::new(Vec::new()),
            started: std::time::Instant::now(),
            handle,
            recorder,
        };
        m.gauge(names::BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        m
    }

    /// A counter by name and labels (registered on each call: for
    /// samplers and rare events, not the data path).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// A counter whose label values are only known at run time (sampled
    /// off the data path: registering it allocates).
    pub fn counter_labelled(&self, name: &'static str, labels: Vec<(&'static str, String)>) -> Counter {
        let labels: Vec<Label> = labels.into_iter().map(|(k, v)| Label::new(k, v)).collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// A gauge by name and labels (as [`Metrics::counter`]).
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        let labels: Vec<Label> = labels.iter().map(|&(k, v)| Label::new(k, v)).collect();
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    /// Counts `n` requests of operation `op` (an [`kms_proto::Operation::index`]
    /// or [`FRAME_INDEX`]).
    #[inline]
    pub fn requests(&self, op: usize, n: u64) {
        self.requests[op].increment(n);
    }

    /// Counts one failed request of operation `op` with `kind`.
    #[inline]
    pub fn error(&self, op: usize, kind: ErrorKind) {
        self.errors[op][kind_index(kind)]
            .get_or_init(|| {
                self.recorder.register_counter(
                    &Key::from_parts(
                        names::ERRORS,
                        vec![
                            Label::new("operation", op_name(op)),
                            Label::new("exception", kind.name()),
                        ],
                    ),
                    &METADATA,
                )
            })
            .increment(1);
    }

    /// Records a frame's service time (admission to answer queued) under
    /// `op` (an operation index, [`FRAME_INDEX`] or [`MIXED_INDEX`]).
    #[inline]
    pub fn latency(&self, op: usize, elapsed: std::time::Duration) {
        let (h, max_gauge, max) = self.latency[op].get_or_init(|| {
            let key =
                |name| Key::from_parts(name, vec![Label::new("operation", op_name(op))]);
            (
                self.recorder.register_histogram(&key(names::DURATION), &METADATA),
                self.recorder.register_gauge(&key(names::DURATION_MAX), &METADATA),
                std::sync::atomic::AtomicU64::new(0),
            )
        });
        let secs = elapsed.as_secs_f64();
        h.record(secs);
        // A new maximum is rare once the daemon runs: a plain load first,
        // a write only when it grows.
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if ns > max.load(std::sync::atomic::Ordering::Relaxed)
            && max.fetch_max(ns, std::sync::atomic::Ordering::Relaxed) < ns
        {
            max_gauge.set(secs);
        }
    }

    /// A key lookup at admission: cached or not.
    #[inline]
    pub fn cache_lookup(&self, hit: bool) {
        if hit {
            self.cache_hits.increment(1);
        } else {
            self.cache_misses.increment(1);
        }
    }

    /// A key loader batch of `keys` keys.
    pub fn loader_batch(&self, keys: usize) {
        self.loader_batches.increment(1);
        self.loader_batch_keys.record(keys as f64);
    }

    /// A connection accepted (`Ok`) or refused at accept (`Err(per_uid)`).
    pub fn connection(&self, accepted: Result<(), bool>) {
        match accepted {
            Ok(()) => {
                self.connections_accepted.increment(1);
                self.connections_open.increment(1.0);
            }
            Err(false) => self.refused_full.increment(1),
            Err(true) => self.refused_uid.increment(1),
        }
    }

    /// A connection closed.
    pub fn connection_closed(&self) {
        self.connections_open.decrement(1.0);
    }

    /// Adds a sampler, called before every scrape and status answer.
    pub fn add_sampler(&self, sampler: Sampler) {
        self.samplers.lock().push(sampler);
    }

    /// Time since the recorder was made (the daemon's start).
    pub fn uptime(&self) -> std::time::Duration {
        self.started.elapsed()
    }

    /// Runs the samplers and renders the Prometheus text exposition.
    pub fn render(&self) -> String {
        self.gauge(names::UPTIME, &[])
            .set(self.uptime().as_secs_f64());
        for s in self.samplers.lock().iter() {
            s(self);
        }
        self.handle.render()
    }

    /// Folds recorded histogram samples into their summaries (the
    /// `kmsd-metrics` thread, every second).
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// When a frame was admitted and under which operation its latency is
/// recorded; carried by its [`crate::dispatch::Reply`] and recorded when
/// the answer is queued.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    /// Taken before admission (the TSC clock: a few nanoseconds).
    pub start: quanta::Instant,
    /// Operation index, [`FRAME_INDEX`] or [`MIXED_INDEX`].
    pub op: usize,
}

impl Stamp {
    /// Now, for operation `op` (set later, once the frame is decoded).
    #[inline]
    pub fn now() -> Stamp {
        Stamp {
            start: quanta::Instant::now(),
            op: FRAME_INDEX,
        }
    }

    /// Records the time since the stamp.
    #[inline]
    pub fn record(self, m: &Metrics) {
        m.latency(self.op, quanta::Instant::now().saturating_duration_since(self.start));
    }
}

/// The latency label of a request: its operation, or [`MIXED_INDEX`] for a
/// batch of several operations ([`FRAME_INDEX`] for an empty batch or
/// items that did not decode).
pub fn frame_op(body: &kms_proto::RequestBody<'_>) -> usize {
    match body {
        kms_proto::RequestBody::Single(Ok(op)) => op.index(),
        kms_proto::RequestBody::Single(Err(_)) => FRAME_INDEX,
        kms_proto::RequestBody::Batch(items) => {
            let mut it = items.iter().map(|i| i.as_ref().map_or(FRAME_INDEX, |o| o.index()));
            let Some(first) = it.next() else {
                return FRAME_INDEX;
            };
            if it.all(|i| i == first) {
                first
            } else {
                MIXED_INDEX
            }
        }
    }
}

/// Counts the items of a request and their failures: one add per run of
/// items of one operation, one per failed item. `outcome(i)` is item `i`'s
/// exception, if it failed.
pub fn count_items(
    m: &Metrics,
    ops: &[Result<kms_proto::Operation<'_>, kms_proto::KmsError>],
    mut outcome: impl FnMut(usize) -> Option<ErrorKind>,
) {
    let mut run: Option<(usize, u64)> = None;
    for (i, op) in ops.iter().enumerate() {
        let idx = match op {
            Ok(op) => {
                debug_assert_eq!(kms_proto::Operation::NAMES[op.index()], op.name());
                op.index()
            }
            // An item that did not decode (an operation this daemon does
            // not know): refused before any operation ran.
            Err(_) => FRAME_INDEX,
        };
        match &mut run {
            Some((o, n)) if *o == idx => *n += 1,
            _ => {
                if let Some((o, n)) = run {
                    m.requests(o, n);
                }
                run = Some((idx, 1));
            }
        }
        if let Some(kind) = outcome(i) {
            m.error(idx, kind);
        }
    }
    if let Some((o, n)) = run {
        m.requests(o, n);
    }
}

#[cfg(test)]
mod tests;
