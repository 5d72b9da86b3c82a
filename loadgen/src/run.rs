//! What one measured run produced: the figures every output format reads.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;

/// How load was offered.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LoadModel {
    /// As fast as the target answers: `connections` x `pipeline` requests in
    /// flight.
    Closed {
        /// Connections to the target.
        connections: usize,
        /// Requests in flight per connection.
        pipeline: usize,
    },
    /// Requests (frames) scheduled at a fixed total rate per second, spread
    /// over `connections`; latency counts from each request's intended send
    /// time.
    Open {
        /// Connections to the target.
        connections: usize,
        /// Requests (frames) per second over all connections.
        rate: f64,
    },
}

/// The protocol requests travel in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// kmsd's flatbuffers frames on its Unix socket (and what the
    /// in-process, echo and HSM baselines run).
    #[default]
    Binary,
    /// AWS KMS's HTTP API, AWS JSON 1.1 over HTTP/1.1 with keep-alive, on
    /// kmsd's second socket (`kmsd-http.sock`): one operation per request.
    Http,
}

impl Protocol {
    /// Name used on the command line and in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Binary => "binary",
            Protocol::Http => "http",
        }
    }
}

/// Which side answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// kmsd over its Unix socket.
    Daemon,
    /// The same frames through `kmsd::wire::handle_frame` in this process.
    InProcess,
    /// A minimal echo server over the same socket type.
    Echo,
    /// The HSM's raw unwrap rate, one session (`hsmraw.rs`).
    HsmUnwrap,
    /// The HSM's raw AES-GCM rate under an HSM-only key, one session.
    HsmGcm,
}

impl TargetKind {
    /// Name used in outputs and the baseline file.
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::Daemon => "daemon",
            TargetKind::InProcess => "in-process",
            TargetKind::Echo => "echo",
            TargetKind::HsmUnwrap => "hsm-unwrap",
            TargetKind::HsmGcm => "hsm-gcm",
        }
    }
}

/// Everything measured in one run's measured window (warm-up excluded).
#[derive(Clone, Debug)]
pub struct RunResult {
    /// Short name of the workload, e.g. "generate-data-key=100 batch=64".
    pub workload: String,
    /// Who answered.
    pub target: TargetKind,
    /// The protocol of the requests.
    pub protocol: Protocol,
    /// Closed or open loop.
    pub model: LoadModel,
    /// Items per request frame.
    pub batch: usize,
    /// Length of the measured window in seconds.
    pub duration_secs: f64,
    /// Request frames answered in the window.
    pub requests: u64,
    /// Operations (batch items) answered in the window, successes and errors.
    pub operations: u64,
    /// Failed operations by AWS exception name (ThrottlingException counts
    /// here too).
    pub errors: BTreeMap<String, u64>,
    /// Latency of each request frame in nanoseconds (open loop: from its
    /// intended send time).
    pub latency: Histogram<u64>,
    /// CPU time the load generator itself used in the window (user+system).
    pub loadgen_cpu_secs: f64,
    /// CPU time of the target process in the window, when it is another
    /// process on this host.
    pub target_cpu_secs: Option<f64>,
    /// Resident set of the target at the end of the window, bytes.
    pub target_rss_bytes: Option<u64>,
    /// Peak resident set of the target so far (VmHWM), bytes.
    pub target_peak_rss_bytes: Option<u64>,
}

impl RunResult {
    /// Operations per second.
    pub fn throughput(&self) -> f64 {
        if self.duration_secs > 0.0 {
            self.operations as f64 / self.duration_secs
        } else {
            0.0
        }
    }

    /// Failed operations, all names together.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Operations refused with ThrottlingException.
    pub fn throttled(&self) -> u64 {
        self.errors.get("ThrottlingException").copied().unwrap_or(0)
    }

    /// A histogram for nanosecond latencies from 1 ns to 1 hour, 3
    /// significant digits.
    pub fn new_histogram() -> Histogram<u64> {
        Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
    }
}
