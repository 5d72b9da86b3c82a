//! Typed configuration, validated once at start-up.
//!
//! The file format is TOML; unknown fields are rejected, and every field has a
//! documented default (see `docs/config.md` and [`Config::default`]).
//! Command-line flags override the file.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Which I/O engine serves the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// io_uring when the kernel allows it, else epoll.
    Auto,
    /// io_uring through tokio-uring; start-up fails if unavailable.
    Uring,
    /// epoll through tokio.
    Epoll,
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Socket path. Default: `$XDG_RUNTIME_DIR/kmsd/kmsd.sock`, else
    /// `/tmp/kmsd-$UID/kmsd.sock`.
    pub socket: PathBuf,
    /// Data directory (keystore, file root key). Default:
    /// `$XDG_DATA_HOME/kmsd`, else `$HOME/.local/share/kmsd`.
    pub data_dir: PathBuf,
    /// Transport settings.
    pub transport: TransportConfig,
    /// Dispatch settings.
    pub dispatch: DispatchConfig,
    /// Protocol and API limits.
    pub limits: LimitsConfig,
    /// Root of trust.
    pub root: RootConfig,
    /// Cache of unwrapped backing keys and the loader that fills it.
    pub cache: CacheConfig,
    /// The key lifecycle's scheduler.
    pub lifecycle: LifecycleConfig,
    /// Who administers keys and who may create them.
    pub access: AccessConfig,
    /// Request-rate quotas (docs/quotas.md).
    pub quotas: QuotasConfig,
    /// The Prometheus listener (docs/metrics.md).
    pub metrics: MetricsConfig,
    /// The audit log (docs/audit.md).
    pub audit: AuditConfig,
    /// AWS KMS's HTTP API (docs/aws-api.md).
    pub http: HttpConfig,
    /// The AWS region and account kmsd presents (its ARNs).
    pub aws: AwsConfig,
}

/// The AWS identity kmsd presents: the region and account of its key and
/// alias ARNs (`arn:<partition>:kms:<region>:<account>:key/<key id>`), so
/// that code which builds ARNs from a region and an account works against
/// it. Not reloaded on SIGHUP: ARNs do not change while kmsd runs.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    /// The AWS Region in ARNs (its partition follows from it: `aws`,
    /// `aws-cn` for `cn-...`, `aws-us-gov` for `us-gov-...`), the default
    /// of `quotas.aws_region`, and the SigV4 region the HTTP API's TCP
    /// listener requires. Default: `us-east-1` (LocalStack's default, and
    /// AWS's first Region; docs/config.md says why).
    pub region: String,
    /// The 12-digit account id in ARNs (a string: leading zeros count).
    /// Default: `000000000000` (LocalStack's; no real account has it).
    pub account_id: String,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            region: "us-east-1".to_owned(),
            account_id: "000000000000".to_owned(),
        }
    }
}

impl AwsConfig {
    /// The ARN form it describes (checked by [`Config::validate`]).
    pub fn arns(&self) -> Result<crate::service::key_id::Arns, String> {
        crate::service::key_id::Arns::from_config(self)
    }
}

/// Which root of trust wraps the backing keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RootKind {
    /// A 32-byte key file in the data directory (development only).
    File,
    /// An AES-256 key inside a PKCS#11 token.
    Pkcs11,
}

/// Root of trust settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RootConfig {
    /// `file` or `pkcs11`. Default: `file`.
    pub kind: RootKind,
    /// PKCS#11 settings; required when `kind = "pkcs11"`.
    pub pkcs11: Option<Pkcs11Config>,
}

/// A PKCS#11 token holding the root key. The PIN is read from a file or an
/// environment variable, never from this file or the command line.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// Path of the PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// Label of the token (slot) holding the root key.
    pub token_label: String,
    /// Label of the root key object. Default: `kmsd-root`.
    #[serde(default = "default_key_label")]
    pub key_label: String,
    /// File whose contents (trailing newline removed) are the user PIN; must
    /// not be readable by group or others.
    pub pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    pub pin_env: Option<String>,
    /// PKCS#11 sessions (and loader threads using them). Default: 1
    /// (SoftHSM does not scale with sessions; see docs/perf/hsm.md).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Mechanism number of RFC 5649 AES key wrap with padding. Default:
    /// 0x210A (CKM_AES_KEY_WRAP_PAD, as SoftHSM2 files it); the PKCS#11 3.0
    /// standard's CKM_AES_KEY_WRAP_KWP is 0x210B.
    #[serde(default = "default_kwp_mechanism")]
    pub kwp_mechanism: u64,
    /// Copy the token's root key into each session (`C_CopyObject`, still
    /// sensitive and non-extractable) and use the copy. Default: true
    /// (2-3x faster on SoftHSM's file-backed token objects).
    #[serde(default = "default_true")]
    pub session_copy: bool,
    /// `CKA_PRIVATE` of the transient session object a backing key is
    /// unwrapped into (read out and destroyed at once). Default: false:
    /// SoftHSM encrypts a private object's value when it creates it and
    /// decrypts it when it is read, a quarter of its unwrap time. Set true
    /// for an HSM whose policy refuses public secret keys.
    #[serde(default)]
    pub private_unwrapped: bool,
}

fn default_key_label() -> String {
    "kmsd-root".to_owned()
}
fn default_pool_size() -> usize {
    1
}
fn default_kwp_mechanism() -> u64 {
    0x210A
}
fn default_true() -> bool {
    true
}

/// Cache of unwrapped backing keys, and the loader threads that fill it off
/// the I/O threads.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Most keys held unwrapped (the cache's capacity; the store's quota is
    /// `limits.max_keys`). Default: 100000. Config files may still call it
    /// `max_keys`, its name before 0.2.
    #[serde(alias = "max_keys")]
    pub capacity: usize,
    /// Seconds an unwrapped key stays cached after loading. Default: 3600.
    pub ttl_secs: u64,
    /// Longest a request waits for its keys to be loaded before it is
    /// answered KeyUnavailableException. Default: 5000 ms.
    pub load_timeout_ms: u64,
    /// Most misses one loader thread takes from the queue at once.
    /// Default: 64.
    pub batch_max: usize,
    /// Concurrent misses for one key share one unwrap, and misses are
    /// batched; false unwraps once per request (for measuring the gain).
    /// Default: true.
    pub batching: bool,
    /// Lock the daemon's memory (mlockall) so keys never reach swap, when
    /// RLIMIT_MEMLOCK allows it; otherwise a warning is logged. Default:
    /// true.
    pub mlock: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            capacity: 100_000,
            ttl_secs: 3600,
            load_timeout_ms: 5000,
            batch_max: 64,
            batching: true,
            mlock: true,
        }
    }
}

impl Default for RootConfig {
    fn default() -> Self {
        RootConfig {
            kind: RootKind::File,
            pkcs11: None,
        }
    }
}

/// Transport settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// I/O engine. Default: `epoll` (measured faster on the reference machine;
    /// see docs/perf/inline-dispatch.md).
    pub io: IoMode,
    /// I/O threads. Default: the number of CPUs.
    pub io_threads: usize,
    /// Most connections served at once; beyond it new connections are closed
    /// at once. Default: 1024.
    pub max_connections: usize,
    /// Requests in flight per connection; beyond it the daemon stops reading
    /// from that connection until answers are written. Default: 256.
    pub max_in_flight: usize,
    /// Group that owns the socket file (name or numeric gid). Default: the
    /// daemon's group.
    pub socket_group: Option<String>,
    /// Mode of the socket file. Default: 0o660.
    pub socket_mode: u32,
    /// Seconds to finish in-flight requests after SIGTERM/SIGINT. Default: 10.
    pub shutdown_grace_secs: u64,
    /// Most connections one uid (SO_PEERCRED at accept) may hold; beyond it
    /// its new connections are closed at once, while other uids still get
    /// in. Root is not exempt. Default: 256, a quarter of the default
    /// `max_connections`, so one user cannot take every slot; values above
    /// `max_connections` act as `max_connections`.
    pub max_connections_per_uid: usize,
    /// A connection with no frame in progress, nothing in flight and no
    /// byte received for this long is closed (it is closed between this and
    /// twice this after its last byte). Default: 300000 ms (5 minutes).
    pub idle_timeout_ms: u64,
    /// Longest from a frame's first byte to its last; a slower sender is
    /// closed. Default: 10000 ms (an 8 MiB frame at under 1 MB/s).
    pub frame_timeout_ms: u64,
    /// A write of answers that makes no progress for this long (the peer
    /// does not read them) closes the connection. Default: 10000 ms.
    pub write_timeout_ms: u64,
    /// Largest answer frame in bytes (length prefix included): a batch whose
    /// answer could be larger runs only the items that fit, the others are
    /// answered ValidationException (docs/protocol.md). At least 1 MiB and
    /// 1 KiB per `limits.max_batch` item, at most 64 MiB. Default: 8 MiB
    /// (the default largest request frame, which clients accept).
    pub max_answer_bytes: usize,
    /// Bytes one connection may hold for its frames in flight: request
    /// bytes plus each answer's bound, from reading a frame until its
    /// answer is written; beyond it the connection is not read. A frame
    /// larger than the budget runs alone. At least 64 KiB. Default: 16 MiB.
    pub connection_budget_bytes: usize,
    /// The same for all connections together. A connection with nothing in
    /// flight may still run one frame of up to 64 KiB beyond it, so that
    /// clients that never read cannot starve the others. At least 1 MiB.
    /// Default: 128 MiB.
    pub total_budget_bytes: usize,
}

/// Dispatch settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatchConfig {
    /// Capacity of the request queue to the worker pool; a request that finds
    /// it full is answered ThrottlingException (counted as overload).
    /// Default: 4096.
    pub queue_capacity: usize,
    /// Worker threads. Default: the number of CPUs.
    pub workers: usize,
    /// Run small data-plane requests whose keys are cached on the I/O thread
    /// instead of handing them to a worker. Default: true (see
    /// docs/perf/inline-dispatch.md for the measurement).
    pub inline_small: bool,
    /// Threads of the control-plane executor (operations that read or write
    /// the store: CreateKey, DescribeKey, ListKeys). Default: 2, so that a
    /// DescribeKey need not wait for a CreateKey's fsync.
    pub control_threads: usize,
}

/// Protocol and API limits.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest frame in bytes. Default: 8 MiB.
    pub max_frame_bytes: usize,
    /// Largest batch in items. Default: 1024.
    pub max_batch: usize,
    /// Most KMS keys in the store (AWS's default quota). Default: 100000.
    pub max_keys: u64,
    /// Most aliases per key (AWS: 50).
    pub max_aliases_per_key: u32,
    /// Most tags per key (AWS: 50).
    pub max_tags_per_key: u32,
    /// Longest tag key, in characters (AWS: 128).
    pub max_tag_key_len: usize,
    /// Longest tag value, in characters (AWS: 256).
    pub max_tag_value_len: usize,
    /// Longest key description, in characters (AWS: 8192).
    pub max_description_len: usize,
    /// On-demand rotations per key over its life (AWS: 25).
    pub max_on_demand_rotations: u32,
}

/// The key lifecycle's due work: deletions, rotations, expiries.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// How often the scheduler looks for due work, in milliseconds. Work
    /// that came due while kmsd was stopped is done at start.
    pub scheduler_interval_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            scheduler_interval_ms: 60_000,
        }
    }
}

/// Which built-in quota profile applies (docs/quotas.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaProfile {
    /// Per uid: cryptographic operations, management reads, management
    /// writes, kmsd's own operations.
    Kmsd,
    /// AWS KMS's published request quotas.
    Aws,
    /// No quotas at all.
    Off,
}

impl QuotaProfile {
    /// Its name in the config.
    pub fn name(self) -> &'static str {
        match self {
            QuotaProfile::Kmsd => "kmsd",
            QuotaProfile::Aws => "aws",
            QuotaProfile::Off => "off",
        }
    }
}

/// Request-rate quotas (docs/quotas.md). Reloaded on SIGHUP.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// `kmsd`, `aws` or `off`.
    pub profile: QuotaProfile,
    /// With `profile = "aws"`: the AWS Region whose symmetric quota to
    /// mirror (10,000, 20,000 or 100,000 a second); none: `aws.region`.
    pub aws_region: Option<String>,
    /// Requests a second one key takes in cryptographic operations, from
    /// all callers together; 0: no per-key limit.
    pub per_key_rate: f64,
    /// The per-key burst; none: one second's worth.
    pub per_key_burst: Option<f64>,
    /// Changes to the profile's classes, for everyone or one caller.
    pub limit: Vec<QuotaLimit>,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        QuotasConfig {
            profile: QuotaProfile::Kmsd,
            aws_region: None,
            per_key_rate: 0.0,
            per_key_burst: None,
            limit: Vec::new(),
        }
    }
}

/// One `[[quotas.limit]]`: a class's rate for `principal`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaLimit {
    /// `*` (everyone without an entry of their own), `uid:N` or `user:NAME`.
    pub principal: String,
    /// A class of the profile (`cryptographic`, ...; in `aws`, the
    /// management operations' names).
    pub class: String,
    /// Requests a second.
    pub rate: Option<f64>,
    /// Most at once; none: one second's worth.
    pub burst: Option<f64>,
    /// No limit at all (instead of `rate`).
    #[serde(default)]
    pub unlimited: bool,
}

/// Who administers keys and who may create them (docs/policy.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessConfig {
    /// Principals (`uid:N`, `gid:N`, `user:NAME`, `group:NAME`,
    /// `unit:NAME.service`, `cgroup:PATH`) given `kms:*` by the default key
    /// policy, and the account-wide operations. The daemon's own uid is
    /// always one. Default: root.
    pub administrators: Vec<String>,
    /// Principals who may CreateKey besides the administrators. Default:
    /// none.
    pub key_creators: Vec<String>,
    /// Allow every request without looking at policies or grants: only for
    /// measuring what authorization costs (kms-loadgen). The daemon refuses
    /// to start with it unless given `--benchmark-allow-unauthorized`.
    pub benchmark_bypass_authorization: bool,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            administrators: vec!["uid:0".into()],
            key_creators: Vec::new(),
            benchmark_bypass_authorization: false,
        }
    }
}

impl AccessConfig {
    /// The service's options.
    pub fn options(&self) -> crate::service::access::AccessOptions {
        crate::service::access::AccessOptions {
            administrators: self.administrators.clone(),
            key_creators: self.key_creators.clone(),
            bypass: self.benchmark_bypass_authorization,
        }
    }
}

/// The Prometheus text exposition of the daemon's metrics (docs/metrics.md).
/// The metrics are always kept (GetStatus, `kmsctl status`, reads them);
/// this only says where, if anywhere, they are served over HTTP.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Where to serve `GET /metrics`: an absolute Unix socket path (in a
    /// directory the daemon owns, as for `socket`) or a TCP `address:port`
    /// on loopback. Default: none (not served).
    pub listen: Option<String>,
    /// Mode of the metrics socket file. Default: 0o600.
    pub socket_mode: u32,
    /// Allow a TCP address that is not loopback: anyone who reaches it reads
    /// the metrics (operation counts, key cache size). Default: false.
    pub allow_non_loopback: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            socket_mode: 0o600,
            allow_non_loopback: false,
        }
    }
}

/// What the daemon does when the audit log cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditFailure {
    /// No record, no answer: held answers become KMSInternalException and
    /// new requests are refused unrun until the log is writable again.
    FailClosed,
    /// Keep answering; hold up to `audit.buffer_records` records in memory,
    /// count the ones dropped past it, and write a gap record on recovery.
    Buffer,
}

/// The audit log: one record per request frame, hash-chained, sealed by a
/// MAC whose key only the root of trust unwraps (docs/audit.md).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Record every request. Default: true.
    pub enabled: bool,
    /// Directory of the log files. Default: none: `<data_dir>/audit`.
    pub directory: Option<PathBuf>,
    /// A file is rotated once it holds this many bytes. Default: 64 MiB.
    pub max_file_bytes: u64,
    /// Longest time between seals, in milliseconds. Default: 1000.
    pub seal_interval_ms: u64,
    /// Most records between seals. Default: 10000.
    pub seal_records: u64,
    /// `fail_closed` or `buffer`. Default: `fail_closed`.
    pub on_failure: AuditFailure,
    /// Records held in memory while the log cannot be written, with
    /// `on_failure = "buffer"`. Default: 100000.
    pub buffer_records: usize,
    /// Answers wait for the batch's fdatasync, not only its write(2).
    /// Default: false (an answered request's record is in the page cache:
    /// it survives a crash of kmsd, not of the machine).
    pub sync_before_answer: bool,
    /// Without `sync_before_answer`: the shortest time between two
    /// fdatasyncs, in milliseconds (records written meanwhile share one).
    /// Default: 10.
    pub sync_interval_ms: u64,
    /// Records queued for the writer at most (the data path waits when it
    /// is full). Default: 16384.
    pub queue_records: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            directory: None,
            max_file_bytes: 64 << 20,
            seal_interval_ms: 1000,
            seal_records: 10_000,
            on_failure: AuditFailure::FailClosed,
            buffer_records: 100_000,
            sync_before_answer: false,
            sync_interval_ms: 10,
            queue_records: 16_384,
        }
    }
}

/// AWS KMS's HTTP API, AWS JSON 1.1 (docs/aws-api.md): served on a Unix
/// socket of its own beside the binary protocol's, the caller identified
/// by the kernel as there.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve the API. Default: true.
    pub enabled: bool,
    /// Its socket path. Default: `kmsd-http.sock` in the directory of
    /// `socket` (the same directory rules apply).
    pub socket: Option<PathBuf>,
    /// Largest request body in bytes (checked before it is parsed).
    /// Default: 262,144 (the largest valid body, a 32 KiB key policy
    /// escaped, is under 100 KiB).
    pub max_body_bytes: usize,
    /// Most request headers. Default: 64 (AWS SDKs send about 12).
    pub max_headers: usize,
    /// Largest request head (request line and headers) in bytes. Default:
    /// 16,384; at least 8,192 (hyper's smallest read buffer).
    pub max_head_bytes: usize,
    /// A request whose head or body is not complete this long after it
    /// began is answered 408 (head) or cut off (body), and the connection
    /// closed; an idle keep-alive connection is closed after it too.
    /// Default: 10,000 ms.
    pub request_timeout_ms: u64,
    /// Also serve the API on this TCP `address:port` (loopback only unless
    /// `allow_non_loopback`), where every request must carry an AWS
    /// Signature Version 4 made with one of `credentials`. Default: none.
    pub tcp: Option<String>,
    /// Allow a `tcp` address that is not loopback: the API is then
    /// reachable from other hosts, in plain HTTP. Default: false.
    pub allow_non_loopback: bool,
    /// Access keys of the TCP listener and whom their requests run as
    /// (docs/sigv4.md).
    pub credentials: Vec<crate::http::sigv4::CredentialConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            socket: None,
            max_body_bytes: 256 * 1024,
            max_headers: 64,
            max_head_bytes: 16 * 1024,
            request_timeout_ms: 10_000,
            tcp: None,
            allow_non_loopback: false,
            credentials: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// The TCP address `tcp` names, checked: loopback unless
    /// `allow_non_loopback`, and with credentials to check signatures by.
    pub fn tcp_addr(&self) -> std::io::Result<Option<std::net::SocketAddr>> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let Some(t) = self.tcp.as_deref() else {
            return Ok(None);
        };
        let addr: std::net::SocketAddr = t
            .parse()
            .map_err(|_| invalid(format!("http.tcp = {t:?}: not an address:port")))?;
        if !addr.ip().is_loopback() && !self.allow_non_loopback {
            return Err(invalid(format!(
                "http.tcp = {t:?} is not a loopback address: the API would be reachable from \
                 other hosts in plain HTTP; set http.allow_non_loopback = true to mean it"
            )));
        }
        if self.credentials.is_empty() {
            return Err(invalid(
                "http.tcp needs [[http.credentials]]: every request on TCP must be signed".into(),
            ));
        }
        Ok(Some(addr))
    }

    /// The API's socket path for a daemon whose binary socket is `socket`.
    pub fn socket_path(&self, socket: &Path) -> PathBuf {
        match &self.socket {
            Some(p) => p.clone(),
            None => socket.with_file_name("kmsd-http.sock"),
        }
    }
}

/// Where the metrics are served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetricsListen {
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(std::net::SocketAddr),
}

impl MetricsConfig {
    /// The listener `listen` names, checked: a path must be absolute, an
    /// address loopback unless `allow_non_loopback`.
    pub fn listen(&self) -> std::io::Result<Option<MetricsListen>> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
        let Some(l) = self.listen.as_deref() else {
            return Ok(None);
        };
        if l.starts_with('/') {
            return Ok(Some(MetricsListen::Unix(PathBuf::from(l))));
        }
        let addr: std::net::SocketAddr = l.parse().map_err(|_| {
            invalid(format!(
                "metrics.listen = {l:?}: neither an absolute socket path nor an address:port"
            ))
        })?;
        if !addr.ip().is_loopback() && !self.allow_non_loopback {
            return Err(invalid(format!(
                "metrics.listen = {l:?} is not a loopback address; set metrics.allow_non_loopback = true to serve the metrics to the network"
            )));
        }
        Ok(Some(MetricsListen::Tcp(addr)))
    }
}

impl AuditConfig {
    /// The directory of the log: `directory`, else `<data_dir>/audit`.
    pub fn dir(&self, data_dir: &Path) -> PathBuf {
        self.directory
            .clone()
            .unwrap_or_else(|| data_dir.join("audit"))
    }

    fn checks(&self) -> [(bool, &'static str); 6] {
        [
            (
                self.sync_interval_ms <= 1000,
                "audit.sync_interval_ms must be 0..=1000",
            ),
            (
                self.max_file_bytes >= 4096,
                "audit.max_file_bytes must be at least 4096",
            ),
            (
                self.seal_interval_ms >= 10 && self.seal_interval_ms <= 3_600_000,
                "audit.seal_interval_ms must be 10..=3600000",
            ),
            (
                self.seal_records >= 1,
                "audit.seal_records must be at least 1",
            ),
            (
                self.buffer_records >= 1,
                "audit.buffer_records must be at least 1",
            ),
            (
                self.queue_records >= 1 && self.queue_records <= 1 << 20,
                "audit.queue_records must be 1..=1048576",
            ),
        ]
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            io: IoMode::Epoll,
            io_threads: cpus(),
            max_connections: 1024,
            max_in_flight: 256,
            socket_group: None,
            socket_mode: 0o660,
            shutdown_grace_secs: 10,
            max_connections_per_uid: 256,
            idle_timeout_ms: 300_000,
            frame_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            max_answer_bytes: crate::wire::DEFAULT_MAX_ANSWER,
            connection_budget_bytes: 16 << 20,
            total_budget_bytes: 128 << 20,
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            queue_capacity: 4096,
            workers: cpus(),
            inline_small: true,
            control_threads: 2,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_frame_bytes: kms_proto::frame::DEFAULT_MAX_FRAME,
            max_batch: kms_proto::codec::DEFAULT_MAX_BATCH,
            max_keys: 100_000,
            max_aliases_per_key: 50,
            max_tags_per_key: 50,
            max_tag_key_len: 128,
            max_tag_value_len: 256,
            max_description_len: 8192,
            max_on_demand_rotations: 25,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: default_socket(),
            data_dir: default_data_dir(),
            transport: TransportConfig::default(),
            dispatch: DispatchConfig::default(),
            limits: LimitsConfig::default(),
            root: RootConfig::default(),
            cache: CacheConfig::default(),
            lifecycle: LifecycleConfig::default(),
            access: AccessConfig::default(),
            quotas: QuotasConfig::default(),
            metrics: MetricsConfig::default(),
            audit: AuditConfig::default(),
            http: HttpConfig::default(),
            aws: AwsConfig::default(),
        }
    }
}

/// The embedded default socket path: `$XDG_RUNTIME_DIR/kmsd/kmsd.sock`,
/// else `/tmp/kmsd-$UID/kmsd.sock`. Defined once in the protocol crate, so
/// that clients know which path is the default one (they check that the
/// daemon there runs as their own uid or root).
pub fn default_socket() -> PathBuf {
    kms_proto::peer::default_socket_path()
}

/// The embedded default data directory.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("kmsd");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/kmsd"),
        None => PathBuf::from("/var/lib/kmsd"),
    }
}

/// A configuration that cannot be used, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown field, bad type).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.transport;
        let d = &self.dispatch;
        let l = &self.limits;
        let c = &self.cache;
        let p = self.root.pkcs11.as_ref();
        let h = &self.http;
        let checks: [(bool, &str); 32] = [
            (
                h.max_body_bytes >= 1024 && h.max_body_bytes <= 16 << 20,
                "http.max_body_bytes must be 1 KiB..=16 MiB",
            ),
            (
                h.max_headers >= 8 && h.max_headers <= 1024,
                "http.max_headers must be 8..=1024",
            ),
            (
                h.max_head_bytes >= 8192 && h.max_head_bytes <= 1 << 20,
                "http.max_head_bytes must be 8 KiB..=1 MiB",
            ),
            (
                h.request_timeout_ms >= 1 && h.request_timeout_ms <= 600_000,
                "http.request_timeout_ms must be 1..=600000",
            ),
            (
                t.io_threads >= 1 && t.io_threads <= 256,
                "transport.io_threads must be 1..=256",
            ),
            (
                t.max_connections >= 1,
                "transport.max_connections must be at least 1",
            ),
            (
                t.max_in_flight >= 1 && t.max_in_flight <= 65536,
                "transport.max_in_flight must be 1..=65536",
            ),
            (
                t.max_connections_per_uid >= 1,
                "transport.max_connections_per_uid must be at least 1",
            ),
            (
                t.idle_timeout_ms >= 1 && t.idle_timeout_ms <= 86_400_000,
                "transport.idle_timeout_ms must be 1..=86400000",
            ),
            (
                t.frame_timeout_ms >= 1 && t.frame_timeout_ms <= 600_000,
                "transport.frame_timeout_ms must be 1..=600000",
            ),
            (
                t.write_timeout_ms >= 1 && t.write_timeout_ms <= 600_000,
                "transport.write_timeout_ms must be 1..=600000",
            ),
            (
                t.socket_mode <= 0o777,
                "transport.socket_mode must be a file mode (<= 0o777)",
            ),
            (
                d.queue_capacity >= 1,
                "dispatch.queue_capacity must be at least 1",
            ),
            (
                d.workers >= 1 && d.workers <= 256,
                "dispatch.workers must be 1..=256",
            ),
            (
                d.control_threads >= 1 && d.control_threads <= 64,
                "dispatch.control_threads must be 1..=64",
            ),
            (
                l.max_frame_bytes >= 1024 && l.max_frame_bytes <= 64 << 20,
                "limits.max_frame_bytes must be 1 KiB..=64 MiB",
            ),
            (
                l.max_batch >= 1 && l.max_batch <= 65536,
                "limits.max_batch must be 1..=65536",
            ),
            (l.max_keys >= 1, "limits.max_keys must be at least 1"),
            (
                l.max_aliases_per_key >= 1 && l.max_aliases_per_key <= 10_000,
                "limits.max_aliases_per_key must be 1..=10000",
            ),
            (
                l.max_tags_per_key >= 1 && l.max_tags_per_key <= 1000,
                "limits.max_tags_per_key must be 1..=1000",
            ),
            (
                // The wire's bounds are AWS's: a limit may be lowered, not
                // raised past them.
                l.max_tag_key_len >= 1 && l.max_tag_key_len <= 128,
                "limits.max_tag_key_len must be 1..=128",
            ),
            (
                l.max_tag_value_len <= 256,
                "limits.max_tag_value_len must be 0..=256",
            ),
            (
                l.max_description_len <= 8192,
                "limits.max_description_len must be 0..=8192",
            ),
            (
                l.max_on_demand_rotations <= 1000,
                "limits.max_on_demand_rotations must be 0..=1000",
            ),
            (
                self.lifecycle.scheduler_interval_ms >= 10
                    && self.lifecycle.scheduler_interval_ms <= 3_600_000,
                "lifecycle.scheduler_interval_ms must be 10..=3600000",
            ),
            (c.capacity >= 1, "cache.capacity must be at least 1"),
            (c.ttl_secs >= 1, "cache.ttl_secs must be at least 1"),
            (
                c.load_timeout_ms >= 1 && c.load_timeout_ms <= 600_000,
                "cache.load_timeout_ms must be 1..=600000",
            ),
            (
                c.batch_max >= 1 && c.batch_max <= 4096,
                "cache.batch_max must be 1..=4096",
            ),
            (
                self.root.kind == RootKind::File || p.is_some(),
                "root.kind = \"pkcs11\" needs a [root.pkcs11] section",
            ),
            (
                p.is_none_or(|p| p.pin_file.is_some() != p.pin_env.is_some()),
                "root.pkcs11 needs exactly one of pin_file and pin_env",
            ),
            (
                p.is_none_or(|p| p.pool_size >= 1 && p.pool_size <= 64),
                "root.pkcs11.pool_size must be 1..=64",
            ),
        ];
        if let Some((_, msg)) = checks
            .iter()
            .chain(&self.budget_checks())
            .chain(&self.audit.checks())
            .find(|(ok, _)| !ok)
        {
            return Err(ConfigError::Invalid((*msg).to_owned()));
        }
        self.aws.arns().map_err(ConfigError::Invalid)?;
        crate::quota::Limits::from_config(&self.quotas, &self.aws).map_err(ConfigError::Invalid)?;
        self.http
            .tcp_addr()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.metrics.socket_mode > 0o777 {
            return Err(ConfigError::Invalid(
                "metrics.socket_mode must be a file mode (<= 0o777)".to_owned(),
            ));
        }
        self.metrics
            .listen()
            .map(|_| ())
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }

    /// The answer bound and the byte budgets.
    fn budget_checks(&self) -> [(bool, &'static str); 3] {
        let t = &self.transport;
        [
            (
                t.max_answer_bytes >= 1 << 20
                    && t.max_answer_bytes <= 64 << 20
                    && t.max_answer_bytes / 1024 >= self.limits.max_batch,
                "transport.max_answer_bytes must be 1 MiB..=64 MiB and at least 1 KiB per limits.max_batch item",
            ),
            (
                t.connection_budget_bytes >= 64 << 10,
                "transport.connection_budget_bytes must be at least 64 KiB",
            ),
            (
                t.total_budget_bytes >= 1 << 20,
                "transport.total_budget_bytes must be at least 1 MiB",
            ),
        ]
    }

    /// Decoding limits for the protocol layer.
    pub fn decode_limits(&self) -> kms_proto::DecodeLimits {
        kms_proto::DecodeLimits {
            max_frame: self.limits.max_frame_bytes,
            max_batch: self.limits.max_batch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<Config>("[transport]\nio_thread = 2\n").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn defaults_are_valid_and_partial_files_keep_them() {
        Config::default().validate().unwrap();
        let c: Config = toml::from_str("[dispatch]\nworkers = 3\n").unwrap();
        assert_eq!(c.dispatch.workers, 3);
        assert_eq!(c.dispatch.queue_capacity, 4096);
        assert_eq!(c.transport.max_in_flight, 256);
    }

    #[test]
    fn metrics_listen_is_a_path_or_a_loopback_address() {
        let parse = |t: &str| toml::from_str::<Config>(t).unwrap();
        assert_eq!(Config::default().metrics.listen().unwrap(), None);
        let c = parse("[metrics]\nlisten = \"/run/kmsd/metrics.sock\"\n");
        c.validate().unwrap();
        assert_eq!(
            c.metrics.listen().unwrap(),
            Some(MetricsListen::Unix("/run/kmsd/metrics.sock".into()))
        );
        for ok in ["127.0.0.1:9464", "[::1]:9464", "127.0.0.2:0"] {
            let c = parse(&format!("[metrics]\nlisten = \"{ok}\"\n"));
            c.validate().unwrap();
            assert!(matches!(
                c.metrics.listen().unwrap(),
                Some(MetricsListen::Tcp(_))
            ));
        }
        for bad in ["0.0.0.0:9464", "192.0.2.1:9464", "[::]:9464"] {
            let c = parse(&format!("[metrics]\nlisten = \"{bad}\"\n"));
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("not a loopback address"), "{bad}: {e}");
            let c = parse(&format!(
                "[metrics]\nlisten = \"{bad}\"\nallow_non_loopback = true\n"
            ));
            c.validate().unwrap();
        }
        for bad in ["metrics.sock", "localhost:9464", "127.0.0.1"] {
            let c = parse(&format!("[metrics]\nlisten = \"{bad}\"\n"));
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("neither an absolute socket path"), "{bad}: {e}");
        }
        let c = parse("[metrics]\nsocket_mode = 0o1777\n");
        assert!(c.validate().is_err());
    }

    #[test]
    fn aws_region_and_account_id_are_checked() {
        let parse = |t: &str| toml::from_str::<Config>(t).unwrap();
        let c = Config::default();
        assert_eq!(
            (c.aws.region.as_str(), c.aws.account_id.as_str()),
            ("us-east-1", "000000000000")
        );
        let c = parse("[aws]\nregion = \"eu-west-3\"\naccount_id = \"123456789012\"\n");
        c.validate().unwrap();
        let arns = c.aws.arns().unwrap();
        assert_eq!(
            arns.key_arn_prefix(),
            "arn:aws:kms:eu-west-3:123456789012:key/"
        );
        for (region, partition) in [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")] {
            let c = parse(&format!("[aws]\nregion = \"{region}\"\n"));
            c.validate().unwrap();
            assert_eq!(c.aws.arns().unwrap().partition(), partition);
        }
        for bad in [
            "local",
            "us-east-1a",
            "US-EAST-1",
            "us_east_1",
            "",
            "eu-west",
            "us-east-1 ",
        ] {
            let c = parse(&format!("[aws]\nregion = {bad:?}\n"));
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("aws.region") && e.contains("not an AWS Region name"),
                "{bad:?}: {e}"
            );
        }
        for bad in [
            "0",
            "12345678901",
            "1234567890123",
            "12345678901x",
            "",
            "１２３４５６７８９０１２",
        ] {
            let c = parse(&format!("[aws]\naccount_id = {bad:?}\n"));
            let e = c.validate().unwrap_err().to_string();
            assert!(
                e.contains("aws.account_id") && e.contains("12 digits"),
                "{bad:?}: {e}"
            );
        }
        // A number is not an account id (leading zeros would be lost).
        assert!(toml::from_str::<Config>("[aws]\naccount_id = 123456789012\n").is_err());
        assert!(toml::from_str::<Config>("[aws]\npartition = \"aws\"\n").is_err());
    }

    #[test]
    fn the_cache_capacity_keeps_its_old_name() {
        let old: Config = toml::from_str("[cache]\nmax_keys = 300\n").unwrap();
        let new: Config = toml::from_str("[cache]\ncapacity = 300\n").unwrap();
        assert_eq!((old.cache.capacity, new.cache.capacity), (300, 300));
        assert_eq!(old.limits.max_keys, LimitsConfig::default().max_keys);
    }

    #[test]
    fn answer_bound_and_budgets_are_validated() {
        let c: Config = toml::from_str(
            "[transport]\nmax_answer_bytes = 2097152\nconnection_budget_bytes = 65536\n\
             total_budget_bytes = 1048576\n",
        )
        .unwrap();
        c.validate().unwrap();
        for (field, value) in [
            ("max_answer_bytes", "1048575"),
            ("max_answer_bytes", "67108865"),
            ("connection_budget_bytes", "65535"),
            ("total_budget_bytes", "1048575"),
        ] {
            let c: Config = toml::from_str(&format!("[transport]\n{field} = {value}\n")).unwrap();
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{field} = {value}: {err}");
        }
        // Room for an over-size error per batch item.
        let c: Config =
            toml::from_str("[limits]\nmax_batch = 4096\n[transport]\nmax_answer_bytes = 2097152\n")
                .unwrap();
        assert!(c.validate().is_err());
    }

    #[test]
    fn out_of_range_values_are_rejected() {
        let mut c = Config::default();
        c.transport.max_in_flight = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn connection_limits_and_deadlines_have_defaults_and_ranges() {
        let c: Config = toml::from_str("[transport]\nidle_timeout_ms = 50\n").unwrap();
        assert_eq!(c.transport.idle_timeout_ms, 50);
        assert_eq!(c.transport.max_connections_per_uid, 256);
        assert_eq!(c.transport.frame_timeout_ms, 10_000);
        assert_eq!(c.transport.write_timeout_ms, 10_000);
        c.validate().unwrap();
        let bad: [fn(&mut TransportConfig); 4] = [
            |t| t.max_connections_per_uid = 0,
            |t| t.idle_timeout_ms = 0,
            |t| t.frame_timeout_ms = 600_001,
            |t| t.write_timeout_ms = 0,
        ];
        for f in bad {
            let mut c = Config::default();
            f(&mut c.transport);
            assert!(c.validate().is_err(), "{:?}", c.transport);
        }
    }

    /// Every field of the config, as `(dotted.path, default)`: the default
    /// config serialized and walked, plus `[root.pkcs11]` (absent by
    /// default) from a minimal table, whose two required fields come out
    /// as whatever the minimal table gave them.
    fn fields() -> Vec<(String, serde_json::Value)> {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let path = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&path, v, out);
                    }
                }
                _ => out.push((prefix.to_owned(), v.clone())),
            }
        }
        let mut out = Vec::new();
        walk(
            "",
            &serde_json::to_value(Config::default()).unwrap(),
            &mut out,
        );
        assert!(
            out.iter().any(|(k, v)| k == "root.pkcs11" && v.is_null()),
            "[root.pkcs11] is absent by default"
        );
        out.retain(|(k, _)| k != "root.pkcs11");
        let pkcs11: Pkcs11Config =
            toml::from_str("module = \"/m.so\"\ntoken_label = \"t\"\n").unwrap();
        walk(
            "root.pkcs11",
            &serde_json::to_value(pkcs11).unwrap(),
            &mut out,
        );
        out
    }

    /// docs/config.md's tables against `Config::default()`: every field has
    /// a row, every row names a field, and every default written as a TOML
    /// value (in backticks) is the real one. Defaults in words are allowed
    /// only for the fields that depend on the machine, and "required" only
    /// for the fields without a default. Every TOML example in the file
    /// must parse as a config.
    #[test]
    fn docs_config_md_matches_the_defaults() {
        const DOC: &str = include_str!("../docs/config.md");
        const MACHINE: [&str; 4] = [
            "socket",
            "data_dir",
            "transport.io_threads",
            "dispatch.workers",
        ];
        const REQUIRED: [&str; 2] = ["root.pkcs11.module", "root.pkcs11.token_label"];
        let fields = fields();
        let mut documented = std::collections::BTreeSet::new();
        let mut problems = Vec::new();
        for line in DOC.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            // A field row: | `path` | default | meaning |
            if cells.len() < 4 || !cells[1].starts_with('`') || cells[1] == "field" {
                continue;
            }
            let path = cells[1].trim_matches('`');
            let default = cells[2];
            if !documented.insert(path.to_owned()) {
                problems.push(format!("{path}: documented twice"));
            }
            let Some((_, real)) = fields.iter().find(|(k, _)| k == path) else {
                problems.push(format!("{path}: documented, but no such field"));
                continue;
            };
            if let Some(literal) = default
                .strip_prefix('`')
                .and_then(|d| d.split('`').next())
                .filter(|_| !MACHINE.contains(&path))
            {
                let parsed: toml::Table = match toml::from_str(&format!("v = {literal}")) {
                    Ok(t) => t,
                    Err(e) => {
                        problems.push(format!("{path}: default `{literal}` is not TOML: {e}"));
                        continue;
                    }
                };
                let doc_value = serde_json::to_value(&parsed["v"]).unwrap();
                if &doc_value != real {
                    problems.push(format!(
                        "{path}: documented default {literal}, Config::default() has {real}"
                    ));
                }
            } else if default.starts_with("none") {
                if !real.is_null() {
                    problems.push(format!("{path}: documented none, default is {real}"));
                }
            } else if default == "required" {
                if !REQUIRED.contains(&path) {
                    problems.push(format!("{path}: documented required, but it has a default"));
                }
            } else if !MACHINE.contains(&path) {
                problems.push(format!(
                    "{path}: default in words ({default}); write it as a TOML value in backticks"
                ));
            }
        }
        for (k, _) in &fields {
            if !documented.contains(k) {
                problems.push(format!("{k}: not documented in docs/config.md"));
            }
        }
        // The machine-dependent defaults the words describe.
        assert_eq!(Config::default().transport.io_threads, cpus());
        assert_eq!(Config::default().dispatch.workers, cpus());

        let mut examples = 0;
        let mut rest = DOC;
        while let Some(start) = rest.find("```toml\n") {
            let body = &rest[start + 8..];
            let end = body.find("```").expect("an unclosed ```toml block");
            if let Err(e) = toml::from_str::<Config>(&body[..end]) {
                problems.push(format!("a TOML example does not parse as a config: {e}"));
            }
            examples += 1;
            rest = &body[end..];
        }
        assert!(examples >= 1, "no TOML example found");
        assert!(
            problems.is_empty(),
            "docs/config.md:\n{}",
            problems.join("\n")
        );
    }
}
