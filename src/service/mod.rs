//! The service: every KMS operation, in-process, independent of sockets.
//!
//! [`Service::handle_frame`] is the whole request path after framing: verify
//! and decode the frame (kms-proto), run each operation (one file per
//! operation under `ops/`), encode the answer. [`Service::execute`] runs one
//! typed operation; tests and the in-process baseline call it directly.
//!
//! Execution modes: on an I/O thread ([`ExecMode::NonBlocking`]) an operation
//! may only use keys already in the in-memory cache and must not touch the
//! store; when it would, it reports [`WouldBlock`], `handle_frame` answers
//! [`Deferred`] with the keys the frame needs that are not cached, the
//! dispatcher has the [`loader::KeyLoader`] fetch them (batched, single
//! flight, with a deadline) and then reruns the whole frame on a worker
//! ([`ExecMode::Blocking`]) with what the loads got
//! ([`Service::handle_frame_prefetched`]: a key that failed or timed out is
//! answered that error, item by item, and not loaded again). Operations
//! have no side effects before the point where they could report
//! `WouldBlock`, so a rerun is safe.

pub mod backing;
pub mod cache;
pub mod hsm_executor;
pub mod keys;
pub mod loader;
pub mod ops;

use crate::crypto::{KeyMaterial, XaesKey};
use crate::identity::Identity;
use crate::keystore::{KeyRecord, Keystore, StoreError};
use crate::root::{RootError, RootOfTrust};
use flatbuffers::FlatBufferBuilder;
use kms_proto::codec::{encode_error_response, encode_response, response_size_hint};
use kms_proto::{
    DecodeLimits, ErrorKind, KeyMetadata, KeyState, KmsError, Operation, Output, Request,
    RequestBody, Response, ResponseBody,
};
use parking_lot::Mutex;
use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

/// Where an operation runs, and so what it may wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// On a worker: may read the store and unwrap keys.
    Blocking,
    /// On an I/O thread: cached keys only, no store, no large work.
    NonBlocking,
}

/// The operation needs a worker; nothing was done that a rerun would repeat
/// visibly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WouldBlock;

/// A frame that must run on a worker, with the keys it names that are not
/// cached (to be loaded first, off the I/O thread).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deferred {
    /// Key ids to load before the rerun (may be empty).
    pub missing: Vec<[u8; 16]>,
    /// The frame uses a cached HSM-only key: run it on the key loader's
    /// threads (the HSM executor) rather than on a worker.
    pub hsm: bool,
}

/// How [`Service::handle_frame_with`] runs one frame.
pub struct FrameOptions<'a> {
    /// Largest answer frame, length prefix included.
    pub max_answer: usize,
    /// Offered the frame's answer bound before anything runs; false leaves
    /// the frame unrun ([`NotRun::OverBudget`]). None: not charged (already
    /// charged, or no budget).
    pub admit: Option<&'a mut dyn FnMut(usize) -> bool>,
    /// True once nobody will read the answer (checked between items).
    pub gone: Option<&'a dyn Fn() -> bool>,
}

/// Why [`Service::handle_frame_with`] wrote no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum NotRun {
    /// Run it on a worker (after loading keys).
    Deferred(Deferred),
    /// The budget refused a frame whose answer is bounded by this many
    /// bytes; nothing ran.
    OverBudget(usize),
    /// The connection is gone; the work was dropped.
    Gone,
}

/// The default largest answer frame: the default largest request frame.
pub const DEFAULT_MAX_ANSWER: usize = kms_proto::frame::DEFAULT_MAX_FRAME;

/// Why an operation did not produce an output.
#[derive(Debug, PartialEq, Eq)]
pub enum ExecError {
    /// Answer the client with this error.
    Kms(KmsError),
    /// Rerun on a worker.
    WouldBlock,
}

impl From<KmsError> for ExecError {
    fn from(e: KmsError) -> Self {
        ExecError::Kms(e)
    }
}

/// A failure opening the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The keystore failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The root of trust failed.
    #[error("root of trust: {0}")]
    Root(#[from] RootError),
    /// The loader threads could not start.
    #[error("starting the key loader: {0}")]
    Threads(std::io::Error),
}

/// Prefix of key ARNs. There is no account or region on a host; the ARN form
/// is kept so that tools that pass ARNs around keep working.
pub const ARN_PREFIX: &str = "arn:kmsd:kms:local:key/";

/// Inline (I/O-thread) execution is limited to requests this small, so that
/// one connection's big batch cannot stall the other connections of its
/// I/O thread. Larger requests go to the worker pool.
const INLINE_MAX_ITEMS: usize = 64;
const INLINE_MAX_PAYLOAD: usize = 64 * 1024;

pub use backing::Backing;
pub(crate) use keys::Core;
pub use keys::LoadedKey;

/// How a service is put together beyond its store and root.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Decoding limits.
    pub limits: DecodeLimits,
    /// Most keys in the store.
    pub max_keys: u64,
    /// Cache and loader settings.
    pub cache: crate::config::CacheConfig,
    /// Loader threads (HSM sessions).
    pub loader_threads: usize,
    /// Most frames with HSM-only keys queued for the loader threads (the
    /// worker queue's bound, `dispatch.queue_capacity`).
    pub hsm_queue: usize,
}

impl ServiceOptions {
    /// The options a daemon with `config` runs with.
    pub fn from_config(config: &crate::config::Config) -> ServiceOptions {
        ServiceOptions {
            limits: config.decode_limits(),
            max_keys: config.limits.max_keys,
            cache: config.cache.clone(),
            loader_threads: match (&config.root.kind, &config.root.pkcs11) {
                (crate::config::RootKind::Pkcs11, Some(p)) => p.pool_size,
                _ => 1,
            },
            hsm_queue: config.dispatch.queue_capacity,
        }
    }
}

/// The key-management service.
pub struct Service {
    core: Arc<Core>,
    loader: loader::KeyLoader,
    limits: DecodeLimits,
    max_keys: u64,
    load_timeout: std::time::Duration,
}

thread_local! {
    // One builder per thread, reused: encoding allocates nothing in the
    // steady state. The capacity is tracked because a builder that grows
    // frees its old buffer without zeroizing it.
    static BUILDER: RefCell<(FlatBufferBuilder<'static>, usize)> =
        RefCell::new((FlatBufferBuilder::with_capacity(BUILDER_CAPACITY), BUILDER_CAPACITY));
}
const BUILDER_CAPACITY: usize = 64 * 1024;

thread_local! {
    // The keys loaded (or not) for the frame this thread is running, by
    // `handle_frame_prefetched`: a key whose load failed or timed out is
    // answered with that error at once instead of being loaded again.
    static PREFETCHED: RefCell<Option<loader::Prefetched>> = const { RefCell::new(None) };
}

/// Puts back the prefetched keys this thread had before the frame (also on
/// unwinding), so their material is released with the frame, and a frame
/// run between the items of another (a worker serving its small lane) does
/// not take the outer frame's keys away.
struct PrefetchedScope(Option<loader::Prefetched>);

impl Drop for PrefetchedScope {
    fn drop(&mut self) {
        PREFETCHED.set(self.0.take());
    }
}

/// Formats a key id the way clients see it (a hyphenated UUID).
pub fn format_key_id(id: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*id).hyphenated().to_string()
}

/// The ARN of a key.
pub fn key_arn(id: &[u8; 16]) -> String {
    format!("{ARN_PREFIX}{}", format_key_id(id))
}

/// Parses a key id or key ARN. Anything else is NotFoundException, as AWS
/// answers for identifiers it cannot resolve; an identifier over 2048
/// characters is ValidationException.
pub fn parse_key_id(s: &str) -> Result<[u8; 16], KmsError> {
    use kms_proto::types::limits::MAX_KEY_ID_LEN;
    // AWS's KeyId is 1..=2048 characters; outside that is a
    // ValidationException (an absent KeyId is one too, in the codec).
    if s.is_empty() {
        return Err(KmsError::validation("KeyId must not be empty"));
    }
    if s.len() > MAX_KEY_ID_LEN {
        return Err(KmsError::validation(format!(
            "KeyId is longer than {MAX_KEY_ID_LEN} characters"
        )));
    }
    let bare = s.strip_prefix(ARN_PREFIX).unwrap_or(s);
    if bare.len() == 36 {
        if let Ok(u) = uuid::Uuid::try_parse(bare) {
            return Ok(*u.as_bytes());
        }
    }
    let shown: String = s.chars().take(128).collect();
    Err(KmsError::new(
        ErrorKind::NotFound,
        format!("invalid key identifier {shown:?}: expected a key id (UUID) or key ARN"),
    ))
}

/// Logs an internal failure and turns it into what the client may see.
pub(crate) fn internal(context: &str, e: impl std::fmt::Display) -> KmsError {
    tracing::error!("{context}: {e}");
    KmsError::new(
        ErrorKind::KmsInternal,
        "internal error; the daemon's log has details",
    )
}

impl Service {
    /// Opens the service over the keystore in `data_dir`.
    pub fn open(
        data_dir: &Path,
        root: Arc<dyn RootOfTrust>,
        limits: DecodeLimits,
        max_keys: u64,
    ) -> Result<Service, ServiceError> {
        Service::with_store(Keystore::open(data_dir)?, root, limits, max_keys)
    }

    /// A service over an already opened store (tests and benches use an
    /// in-memory one), with the default cache.
    pub fn with_store(
        store: Keystore,
        root: Arc<dyn RootOfTrust>,
        limits: DecodeLimits,
        max_keys: u64,
    ) -> Result<Service, ServiceError> {
        Service::with_options(
            store,
            root,
            ServiceOptions {
                limits,
                max_keys,
                cache: crate::config::CacheConfig::default(),
                loader_threads: 1,
                hsm_queue: crate::config::DispatchConfig::default().queue_capacity,
            },
        )
    }

    /// A service over `store` with every option given.
    pub fn with_options(
        store: Keystore,
        root: Arc<dyn RootOfTrust>,
        options: ServiceOptions,
    ) -> Result<Service, ServiceError> {
        let check = root.wrap(&KeyMaterial::from_bytes([0; 32]))?;
        store.bind_root(root.kind(), &check)?;
        let c = &options.cache;
        // The key loader reads through a connection of its own.
        let reader = store.open_reader()?;
        let core = Arc::new(Core {
            store: Mutex::new(store),
            root,
            cache: cache::KeyCache::new(c.max_keys, std::time::Duration::from_secs(c.ttl_secs)),
            usage: Default::default(),
        });
        let loader = loader::KeyLoader::start(
            Arc::clone(&core),
            reader,
            loader::LoaderConfig {
                threads: options.loader_threads,
                batch_max: c.batch_max,
                batching: c.batching,
                frame_queue: options.hsm_queue,
            },
        )
        .map_err(ServiceError::Threads)?;
        Ok(Service {
            core,
            loader,
            limits: options.limits,
            max_keys: options.max_keys,
            load_timeout: std::time::Duration::from_millis(c.load_timeout_ms),
        })
    }

    /// The loader (prefetching keys off the I/O threads, its counters).
    pub fn loader(&self) -> &loader::KeyLoader {
        &self.loader
    }

    /// How long a request waits for its keys.
    pub fn load_timeout(&self) -> std::time::Duration {
        self.load_timeout
    }

    /// Keys cached now.
    pub fn cached_keys(&self) -> usize {
        self.core.cache.len()
    }

    /// Decoding limits in force.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// Loads a key: from the cache, else (in blocking mode) through the
    /// loader, waiting at most the load timeout.
    pub fn load_key(&self, id: &[u8; 16], mode: ExecMode) -> Result<Arc<LoadedKey>, ExecError> {
        // The hot path: one read lock, one hash lookup.
        if let Some(k) = self.core.cache.get(id) {
            return Ok(k);
        }
        self.load_ref(&keys::KeyRef::from(*id), mode)
    }

    /// Loads the key named by a client-supplied identifier.
    pub fn load_key_by_name(
        &self,
        key_id: &str,
        mode: ExecMode,
    ) -> Result<Arc<LoadedKey>, ExecError> {
        let id = parse_key_id(key_id)?;
        self.load_key(&id, mode)
    }

    /// Metadata as clients see it.
    pub fn metadata(record: &KeyRecord) -> KeyMetadata {
        KeyMetadata {
            key_id: format_key_id(&record.key_id),
            arn: key_arn(&record.key_id),
            creation_date: record.created_at,
            enabled: record.state == KeyState::Enabled,
            description: record.description.clone(),
            key_state: record.state,
            key_usage: kms_proto::KeyUsage::EncryptDecrypt,
            key_spec: kms_proto::KeySpec::SymmetricDefault,
            origin: record.origin,
            current_version: record.current_version,
        }
    }

    /// Runs one operation.
    pub fn execute(
        &self,
        op: &Operation<'_>,
        peer: &Identity,
        mode: ExecMode,
    ) -> Result<Output, ExecError> {
        match op {
            Operation::CreateKey(r) => ops::create_key::apply(self, r, peer, mode),
            Operation::DescribeKey(r) => ops::describe_key::apply(self, r, peer, mode),
            Operation::ListKeys(r) => ops::list_keys::apply(self, r, peer, mode),
            Operation::GenerateDataKey(r) => {
                ops::generate_data_key::apply(self, r, peer, mode, true)
            }
            Operation::GenerateDataKeyWithoutPlaintext(r) => {
                ops::generate_data_key::apply(self, r, peer, mode, false)
            }
            Operation::Encrypt(r) => ops::encrypt::apply(self, r, peer, mode),
            Operation::Decrypt(r) => ops::decrypt::apply(self, r, peer, mode),
            Operation::ReEncrypt(r) => ops::re_encrypt::apply(self, r, peer, mode),
            Operation::GenerateRandom(r) => ops::generate_random::apply(r),
        }
    }

    /// Runs one operation to completion on the calling thread (tests, the
    /// in-process baseline, the control plane).
    pub fn call(&self, op: &Operation<'_>, peer: &Identity) -> Result<Output, KmsError> {
        match self.execute(op, peer, ExecMode::Blocking) {
            Ok(o) => Ok(o),
            Err(ExecError::Kms(e)) => Err(e),
            Err(ExecError::WouldBlock) => unreachable!("blocking execution never defers"),
        }
    }

    fn run(
        &self,
        op: &Result<Operation<'_>, KmsError>,
        peer: &Identity,
        mode: ExecMode,
    ) -> Result<Result<Output, KmsError>, WouldBlock> {
        let op = match op {
            Ok(op) => op,
            Err(e) => return Ok(Err(e.clone())),
        };
        match self.execute(op, peer, mode) {
            Ok(o) => Ok(Ok(o)),
            Err(ExecError::Kms(e)) => Ok(Err(e)),
            Err(ExecError::WouldBlock) => Err(WouldBlock),
        }
    }

    /// Decodes a frame, runs it and appends the encoded answer to `out`. In
    /// non-blocking mode returns [`Deferred`] (with `out` untouched) when the
    /// request needs a worker, naming the keys to load first. Answers are
    /// bounded by [`DEFAULT_MAX_ANSWER`] (see [`Service::handle_frame_with`]).
    pub fn handle_frame(
        &self,
        frame: &[u8],
        peer: &Identity,
        mode: ExecMode,
        out: &mut Vec<u8>,
    ) -> Result<(), Deferred> {
        let opts = FrameOptions {
            max_answer: DEFAULT_MAX_ANSWER,
            admit: None,
            gone: None,
        };
        match self.handle_frame_with(frame, peer, mode, out, opts) {
            Ok(()) => Ok(()),
            Err(NotRun::Deferred(d)) => Err(d),
            Err(NotRun::OverBudget(_) | NotRun::Gone) => {
                unreachable!("no budget and no connection to lose")
            }
        }
    }

    /// [`Service::handle_frame`] with an answer size bound, a budget and a
    /// connection that may go away.
    ///
    /// After decoding, the answer's size is bounded from the request alone
    /// ([`answer_plan`]): a batch whose answer could exceed
    /// `opts.max_answer` runs only the items before the first one that would
    /// not fit; that item and every one after it are answered
    /// ValidationException without running (a single request that could not
    /// fit is answered the same way). Then `opts.admit` is offered the
    /// frame's answer bound; if it refuses, nothing has run and the answer
    /// is [`NotRun::OverBudget`]. A blocking run checks `opts.gone` before
    /// each item and stops with [`NotRun::Gone`] once it is true: nobody
    /// would read the answer.
    pub fn handle_frame_with(
        &self,
        frame: &[u8],
        peer: &Identity,
        mode: ExecMode,
        out: &mut Vec<u8>,
        opts: FrameOptions<'_>,
    ) -> Result<(), NotRun> {
        let request = match kms_proto::decode_request(frame, &self.limits) {
            Ok(r) => r,
            Err(e) => {
                // A frame-level error is small (no client text beyond the
                // bounded messages) and is not charged.
                encode_error_response(e.request_id, &e.error, out);
                return Ok(());
            }
        };
        let plan = answer_plan(&request, opts.max_answer);
        if let Some(admit) = opts.admit {
            if !admit(plan.bound) {
                return Err(NotRun::OverBudget(plan.bound));
            }
        }
        let gone = || mode == ExecMode::Blocking && opts.gone.is_some_and(|g| g());
        if gone() {
            return Err(NotRun::Gone);
        }
        let defer = |request: &Request<'_>| NotRun::Deferred(self.deferred(request));
        if mode == ExecMode::NonBlocking && !is_small(&request) {
            return Err(defer(&request));
        }
        let too_large = || answer_too_large(opts.max_answer);
        let body = match &request.body {
            RequestBody::Single(_) if plan.runs == 0 => ResponseBody::Single(Err(too_large())),
            RequestBody::Single(op) => match self.run(op, peer, mode) {
                Ok(outcome) => ResponseBody::Single(outcome),
                Err(WouldBlock) => return Err(defer(&request)),
            },
            RequestBody::Batch(items) => {
                let mut outcomes = Vec::with_capacity(items.len());
                for (i, op) in items.iter().enumerate() {
                    if i >= plan.runs {
                        outcomes.push(Err(too_large()));
                        continue;
                    }
                    if gone() {
                        return Err(NotRun::Gone);
                    }
                    match self.run(op, peer, mode) {
                        Ok(outcome) => outcomes.push(outcome),
                        Err(WouldBlock) => return Err(defer(&request)),
                    }
                }
                ResponseBody::Batch(outcomes)
            }
        };
        let response = Response {
            request_id: request.request_id,
            body,
        };
        let start = out.len();
        encode(&response, out);
        debug_assert!(
            out.len() - start <= plan.bound,
            "answer of {} bytes over its bound {}",
            out.len() - start,
            plan.bound
        );
        Ok(())
    }

    /// Runs a frame off the I/O threads (on a worker or the HSM executor),
    /// as [`Service::handle_frame_with`] in blocking mode. With `prefetched`
    /// (the frame was deferred and its keys loaded first), the prefetch's
    /// outcomes take the place of loads, so an item whose key failed to load
    /// (or timed out) is answered that error at once and its neighbours are
    /// served.
    pub fn handle_frame_prefetched(
        &self,
        frame: &[u8],
        peer: &Identity,
        prefetched: Option<loader::Prefetched>,
        out: &mut Vec<u8>,
        opts: FrameOptions<'_>,
    ) -> Result<(), NotRun> {
        let _scope = PrefetchedScope(PREFETCHED.replace(prefetched));
        self.handle_frame_with(frame, peer, ExecMode::Blocking, out, opts)
    }

    /// Inserts a freshly created key into the store and the cache.
    pub(crate) fn store_new_key(
        &self,
        record: KeyRecord,
        material: Option<&KeyMaterial>,
    ) -> Result<(), KmsError> {
        // An HSM-only key (no material here) was generated in the HSM by
        // the caller and stores nothing wrapped.
        // Taken before the store write, as every load does: an
        // invalidation meanwhile keeps this entry out of the cache.
        let seen = self.core.cache.revision(&record.key_id);
        let wrapped = match material {
            Some(m) => self.core.root.wrap(m).map_err(|e| match e {
                RootError::Unavailable(_) => loader::root_error(e),
                e => internal("wrapping backing key", e),
            })?,
            None => Vec::new(),
        };
        {
            let mut store = self.core.store.lock();
            // An HSM-only key's slot was taken by its pending record, before
            // it was generated (`ops::create_key`).
            if material.is_some() {
                let count = store
                    .count_keys_and_pending()
                    .map_err(|e| internal("counting keys", e))?;
                if count >= self.max_keys {
                    return Err(self.store_full());
                }
            }
            store
                .insert_key(
                    &record,
                    &crate::keystore::WrappedVersion {
                        version: 1,
                        wrapped,
                    },
                )
                .map_err(|e| internal("storing key", e))?;
        }
        let backing = match material {
            Some(m) => Backing::Soft(XaesKey::new(m)),
            None => Backing::Hsm(self.core.usage.version(&record.key_id, 1, 0)),
        };
        let id = record.key_id;
        let loaded = LoadedKey::new(record, 1);
        loaded.fill(1, backing);
        self.loader.forget_failure(&id);
        self.core.cache.insert(Arc::new(loaded), seen);
        Ok(())
    }

    /// LimitExceededException: the store holds `limits.max_keys` keys.
    pub(crate) fn store_full(&self) -> KmsError {
        KmsError::new(
            ErrorKind::LimitExceeded,
            format!(
                "the store already holds the maximum of {} keys",
                self.max_keys
            ),
        )
    }

    /// Most keys the store may hold.
    pub(crate) fn max_keys(&self) -> u64 {
        self.max_keys
    }

    /// Settles HSM-only keys left pending by a CreateKey that a crash
    /// interrupted (see [`ops::create_key::reconcile_hsm_keys`]). The
    /// daemon calls it at start-up, before serving.
    ///
    /// # Errors
    ///
    /// The store failing.
    pub fn reconcile_hsm_keys(&self) -> Result<usize, StoreError> {
        ops::create_key::reconcile_hsm_keys(self)
    }

    /// The store, for control-plane operations (workers only).
    pub(crate) fn store(&self) -> parking_lot::MutexGuard<'_, Keystore> {
        self.core.store.lock()
    }

    /// The keys a request names (by id, ARN or a ciphertext blob's header)
    /// that are not cached: what must be loaded before it can run.
    pub fn missing_keys(&self, request: &Request<'_>) -> Vec<[u8; 16]> {
        let mut ids = request_key_ids(request);
        ids.retain(|id| !self.core.cache.contains(id));
        ids
    }

    /// Whether any of `ids` is a cached HSM-only key.
    fn any_hsm_only(&self, ids: &[[u8; 16]]) -> bool {
        ids.iter().any(|id| {
            self.core
                .cache
                .get(id)
                .is_some_and(|k| k.origin() == kms_proto::Origin::Hsm)
        })
    }

    /// One decode of `frame` for a dispatcher that does not run it inline:
    /// the bound of its answer under `max_answer` ([`answer_plan`]), the
    /// keys it names that are not cached, and whether it uses a cached
    /// HSM-only key. A frame that does not decode is answered with one small
    /// error: bound 0, nothing to load.
    pub fn inspect_frame(&self, frame: &[u8], max_answer: usize) -> (usize, Deferred) {
        match kms_proto::decode_request(frame, &self.limits) {
            Ok(r) => (answer_plan(&r, max_answer).bound, self.deferred(&r)),
            Err(_) => (
                0,
                Deferred {
                    missing: Vec::new(),
                    hsm: false,
                },
            ),
        }
    }

    /// What `request` needs before it can run off the I/O thread: the keys
    /// it names that are not cached, and whether it uses a cached HSM-only
    /// key.
    fn deferred(&self, request: &Request<'_>) -> Deferred {
        let ids = request_key_ids(request);
        Deferred {
            hsm: self.any_hsm_only(&ids),
            missing: ids
                .into_iter()
                .filter(|id| !self.core.cache.contains(id))
                .collect(),
        }
    }

    /// Whether `frame` uses a cached HSM-only key (see [`Deferred::hsm`]);
    /// false for a frame that does not decode.
    pub fn frame_uses_hsm(&self, frame: &[u8]) -> bool {
        kms_proto::decode_request(frame, &self.limits)
            .is_ok_and(|r| self.any_hsm_only(&request_key_ids(&r)))
    }
}

/// The key ids a request names (sorted, without repeats): by key id, or
/// by the header of the ciphertext it decrypts.
fn request_key_ids(request: &Request<'_>) -> Vec<[u8; 16]> {
    fn named(op: &Operation<'_>, out: &mut Vec<[u8; 16]>) {
        let mut by_name = |s: &str| {
            if let Ok(id) = parse_key_id(s) {
                out.push(id);
            }
        };
        match op {
            Operation::GenerateDataKey(r) | Operation::GenerateDataKeyWithoutPlaintext(r) => {
                by_name(r.key_id)
            }
            Operation::Encrypt(r) => by_name(r.key_id),
            Operation::DescribeKey(_)
            | Operation::CreateKey(_)
            | Operation::ListKeys(_)
            | Operation::GenerateRandom(_) => {}
            Operation::Decrypt(r) => {
                if let Ok(h) = backing::parse_any_header(r.ciphertext_blob) {
                    out.push(h.key_id);
                }
            }
            Operation::ReEncrypt(r) => {
                by_name(r.destination_key_id);
                if let Ok(h) = backing::parse_any_header(r.ciphertext_blob) {
                    out.push(h.key_id);
                }
            }
        }
    }
    let mut ids = Vec::new();
    match &request.body {
        RequestBody::Single(Ok(op)) => named(op, &mut ids),
        RequestBody::Single(Err(_)) => {}
        RequestBody::Batch(items) => items.iter().flatten().for_each(|op| named(op, &mut ids)),
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Whether a request is small enough to run on an I/O thread.
fn is_small(request: &Request<'_>) -> bool {
    fn payload(op: &Result<Operation<'_>, KmsError>) -> usize {
        match op {
            Ok(Operation::Encrypt(r)) => r.plaintext.len(),
            Ok(Operation::Decrypt(r)) => r.ciphertext_blob.len(),
            Ok(Operation::ReEncrypt(r)) => r.ciphertext_blob.len(),
            Ok(Operation::GenerateDataKey(r))
            | Ok(Operation::GenerateDataKeyWithoutPlaintext(r)) => {
                r.number_of_bytes.unwrap_or(32) as usize
            }
            Ok(Operation::GenerateRandom(r)) => r.number_of_bytes as usize,
            _ => 0,
        }
    }
    match &request.body {
        RequestBody::Single(op) => payload(op) <= INLINE_MAX_PAYLOAD,
        RequestBody::Batch(items) => {
            items.len() <= INLINE_MAX_ITEMS
                && items.iter().map(payload).sum::<usize>() <= INLINE_MAX_PAYLOAD
        }
    }
}

// Answer size bounds. They follow `kms_proto::codec::response_size_hint`
// (an upper bound of the encoded size, which sizes the builder): a frame
// costs 128 bytes and its length prefix, an outcome 256 bytes of tables and
// padding, a batch entry 8, plus the variable parts, bounded here from the
// request alone so that they are known before any work is done.

/// A frame's fixed part.
const FRAME_FIXED: usize = 128 + kms_proto::frame::LEN_PREFIX;
/// An outcome's fixed part, batch entry and exception name included.
const OUTCOME_FIXED: usize = 256 + 8 + 40;
/// Longest error message kmsd writes that holds no client text of
/// unbounded length: the longest quotes a key identifier of at most 128
/// characters Debug-escaped (at most 10 bytes each).
const ERROR_TEXT_MAX: usize = 1536;
/// A key id as clients see it (a hyphenated UUID).
const KEY_ID_TEXT: usize = 36;
/// A key ARN.
const ARN_TEXT: usize = ARN_PREFIX.len() + KEY_ID_TEXT;
/// What a ciphertext blob adds to its plaintext, for either format (61 and
/// 49 bytes).
const BLOB_OVERHEAD_MAX: usize = 64;
/// A ListKeys entry beyond its two strings (`response_size_hint`).
const LIST_ENTRY_FIXED: usize = 64;
/// The answer to an item that does not fit the answer frame.
const TOO_LARGE_BOUND: usize = OUTCOME_FIXED + 256;
/// Tables of a frame, and of an outcome beyond the entries of a ListKeys
/// page (outcome, output, metadata or error), as the response verifier
/// counts them.
const FRAME_TABLES: usize = 4;
const OUTCOME_TABLES: usize = 4;
/// Most tables in an answer: more and kms-proto clients refuse it.
const MAX_TABLES: usize = kms_proto::codec::MAX_RESPONSE_TABLES;

/// Which items of a request run, and the bound of its whole answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerPlan {
    /// Items from the start that run (0 or 1 for a single request); the
    /// rest are answered [`answer_too_large`].
    pub runs: usize,
    /// Upper bound of the encoded answer frame, length prefix included.
    pub bound: usize,
}

/// The page size a ListKeys request asks for (an out-of-range one fails).
fn list_limit(r: &kms_proto::ListKeys<'_>) -> usize {
    use kms_proto::types::limits::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT};
    let limit = match r.limit {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    };
    limit as usize
}

/// Tables one outcome adds to an answer, from its request.
fn outcome_tables(op: &Result<Operation<'_>, KmsError>) -> usize {
    OUTCOME_TABLES
        + match op {
            Ok(Operation::ListKeys(r)) => list_limit(r),
            _ => 0,
        }
}

/// Upper bound of the bytes one outcome adds to an answer, from its
/// request: the larger of its success and its longest error.
pub fn outcome_bound(op: &Result<Operation<'_>, KmsError>) -> usize {
    use kms_proto::types::limits::{MAX_DATA_KEY_BYTES, MAX_DESCRIPTION_LEN, MAX_PLAINTEXT};
    let op = match op {
        Ok(op) => op,
        Err(e) => return OUTCOME_FIXED + e.message.len(),
    };
    // A duplicate context key is quoted Debug-escaped: at most 6 bytes per
    // byte (`\u{1}` is 5).
    let context = |c: &[(&str, &str)]| c.iter().map(|(k, _)| 6 * k.len()).sum::<usize>();
    let data_key = |r: &kms_proto::GenerateDataKey<'_>| {
        let n = match (r.number_of_bytes, r.key_spec) {
            (Some(n), _) => n,
            (None, Some(spec)) => spec.num_bytes(),
            (None, None) => 0,
        };
        n.min(MAX_DATA_KEY_BYTES) as usize
    };
    let (success, error_text) = match op {
        Operation::CreateKey(r) => (KEY_ID_TEXT + ARN_TEXT + r.description.len(), 0),
        // A stored description is at most 8192 characters of up to 4 bytes.
        Operation::DescribeKey(_) => (KEY_ID_TEXT + ARN_TEXT + 4 * MAX_DESCRIPTION_LEN, 0),
        Operation::ListKeys(r) => {
            let limit = list_limit(r);
            (
                KEY_ID_TEXT + limit * (LIST_ENTRY_FIXED + KEY_ID_TEXT + ARN_TEXT),
                0,
            )
        }
        Operation::GenerateDataKey(r) => (
            KEY_ID_TEXT + 2 * data_key(r) + BLOB_OVERHEAD_MAX,
            context(&r.context),
        ),
        Operation::GenerateDataKeyWithoutPlaintext(r) => (
            KEY_ID_TEXT + data_key(r) + BLOB_OVERHEAD_MAX,
            context(&r.context),
        ),
        Operation::Encrypt(r) => (
            KEY_ID_TEXT + r.plaintext.len().min(MAX_PLAINTEXT) + BLOB_OVERHEAD_MAX,
            context(&r.context),
        ),
        // The plaintext is shorter than its blob.
        Operation::Decrypt(r) => (KEY_ID_TEXT + r.ciphertext_blob.len(), context(&r.context)),
        Operation::ReEncrypt(r) => (
            2 * KEY_ID_TEXT + r.ciphertext_blob.len() + BLOB_OVERHEAD_MAX,
            context(&r.source_context) + context(&r.destination_context),
        ),
        Operation::GenerateRandom(r) => (r.number_of_bytes.min(MAX_DATA_KEY_BYTES) as usize, 0),
    };
    OUTCOME_FIXED + success.max(ERROR_TEXT_MAX + error_text)
}

/// Which items of `request` run under an answer frame of at most
/// `max_answer` bytes and `kms_proto::codec::MAX_RESPONSE_TABLES` tables
/// (what clients accept), and the bound of the answer. Items run in order up to the first one whose
/// outcome, with the over-size errors of every item after it, would not
/// fit; it and the rest are answered [`answer_too_large`]. One pass over
/// the decoded items, no allocation.
pub fn answer_plan(request: &Request<'_>, max_answer: usize) -> AnswerPlan {
    match &request.body {
        RequestBody::Single(op) => {
            let bound = FRAME_FIXED + outcome_bound(op);
            if bound <= max_answer && FRAME_TABLES + outcome_tables(op) <= MAX_TABLES {
                AnswerPlan { runs: 1, bound }
            } else {
                AnswerPlan {
                    runs: 0,
                    bound: FRAME_FIXED + TOO_LARGE_BOUND,
                }
            }
        }
        RequestBody::Batch(items) => {
            let n = items.len();
            let mut bound = FRAME_FIXED;
            let mut tables = FRAME_TABLES;
            for (i, op) in items.iter().enumerate() {
                let b = outcome_bound(op);
                let t = outcome_tables(op);
                let rest = n - i - 1;
                if bound + b + rest * TOO_LARGE_BOUND > max_answer
                    || tables + t + rest * OUTCOME_TABLES > MAX_TABLES
                {
                    return AnswerPlan {
                        runs: i,
                        bound: bound + (n - i) * TOO_LARGE_BOUND,
                    };
                }
                bound += b;
                tables += t;
            }
            AnswerPlan { runs: n, bound }
        }
    }
}

/// The error of an item whose answer would not fit the answer frame.
/// ValidationException rather than LimitExceededException: the request as
/// sent can never succeed (a retry of it fails the same way), and SDK
/// retry modes retry LimitExceededException as throttling; the client must
/// send the item again in another frame.
pub fn answer_too_large(max_answer: usize) -> KmsError {
    KmsError::validation(format!(
        "the answer to this batch would exceed the largest answer frame ({max_answer} bytes, \
         {MAX_TABLES} tables) from this item on; send this item and the ones after it in \
         another frame"
    ))
}

/// Encodes with this thread's builder, making sure it never has to grow.
fn encode(response: &Response, out: &mut Vec<u8>) {
    let hint = response_size_hint(response);
    out.reserve(hint + kms_proto::frame::LEN_PREFIX);
    if hint > BUILDER_CAPACITY * 16 {
        // Rare, huge answers: a one-off builder of the right size, so that no
        // thread keeps megabytes around.
        let mut fbb = FlatBufferBuilder::with_capacity(hint);
        encode_response(&mut fbb, response, out);
        return;
    }
    BUILDER.with(|b| {
        let mut b = b.borrow_mut();
        if hint > b.1 {
            let cap = hint.next_power_of_two();
            *b = (FlatBufferBuilder::with_capacity(cap), cap);
        }
        encode_response(&mut b.0, response, out);
    });
}

#[cfg(test)]
mod answer_tests {
    use super::*;
    use crate::root::FileRoot;
    use kms_proto::{CreateKey, ListKeys};

    const PEER: Identity = Identity {
        uid: 1000,
        gid: 1000,
        pid: 1,
    };

    fn service() -> Service {
        Service::with_store(
            Keystore::open_in_memory().unwrap(),
            Arc::new(FileRoot::from_key(KeyMaterial::from_bytes([7; 32]))),
            DecodeLimits::default(),
            10_000,
        )
        .unwrap()
    }

    fn create(svc: &Service, description: &str) -> String {
        let op = Operation::CreateKey(CreateKey {
            description,
            ..CreateKey::default()
        });
        match svc.call(&op, &PEER).unwrap() {
            Output::CreateKey(m) => m.key_id,
            other => panic!("{other:?}"),
        }
    }

    fn frame(body: RequestBody<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        kms_proto::codec::encode_request(
            &mut FlatBufferBuilder::new(),
            &Request {
                request_id: 7,
                body,
            },
            &mut out,
        );
        out
    }

    /// Runs a frame (without its length prefix) as a worker would.
    fn answer(svc: &Service, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        svc.handle_frame(&frame[4..], &PEER, ExecMode::Blocking, &mut out)
            .unwrap();
        out
    }

    #[test]
    fn a_batch_whose_answer_would_exceed_the_bound_runs_only_the_items_that_fit() {
        // The case: 1,024 ListKeys(Limit 1000) over 1,000 keys was
        // one answer of 127 MB.
        let svc = service();
        for _ in 0..1000 {
            create(&svc, "");
        }
        let list = || {
            Ok(Operation::ListKeys(ListKeys {
                limit: 1000,
                marker: None,
            }))
        };
        let f = frame(RequestBody::Batch((0..1024).map(|_| list()).collect()));
        let out = answer(&svc, &f);
        assert!(
            out.len() <= DEFAULT_MAX_ANSWER,
            "answer of {} bytes",
            out.len()
        );
        let r = kms_proto::decode_response(&out[4..], 1 << 30).unwrap();
        assert_eq!(r.request_id, 7);
        let ResponseBody::Batch(items) = r.body else {
            panic!("a batch answer")
        };
        assert_eq!(items.len(), 1024);
        let runs = items.iter().take_while(|o| o.is_ok()).count();
        // One page of 1,000 keys per answer: clients accept no more tables.
        assert_eq!(runs, 1);
        for o in &items[..runs] {
            let Ok(Output::ListKeys(l)) = o else {
                panic!("{o:?}")
            };
            assert_eq!(l.keys.len(), 1000);
        }
        for o in &items[runs..] {
            let e = o.as_ref().expect_err("past the bound");
            assert_eq!(e.kind, ErrorKind::Validation);
            assert!(e.message.contains("largest answer frame"), "{e}");
        }
        // The plan said so before anything ran.
        let req = kms_proto::decode_request(&f[4..], &DecodeLimits::default()).unwrap();
        let plan = answer_plan(&req, DEFAULT_MAX_ANSWER);
        assert_eq!(plan.runs, runs);
        assert!(out.len() <= plan.bound);
        // A single request over a (small) bound gets the same error.
        let single = frame(RequestBody::Single(list()));
        let req = kms_proto::decode_request(&single[4..], &DecodeLimits::default()).unwrap();
        assert_eq!(answer_plan(&req, 100_000).runs, 0);
    }

    #[test]
    fn answer_bounds_hold_for_the_largest_answers_and_errors() {
        use kms_proto::types::limits::{MAX_DESCRIPTION_LEN, MAX_PLAINTEXT};
        let svc = service();
        // The longest description: 8192 four-byte characters.
        let long = "\u{10348}".repeat(MAX_DESCRIPTION_LEN);
        let key = create(&svc, &long);
        let blob = match svc
            .call(
                &Operation::Encrypt(kms_proto::Encrypt {
                    key_id: &key,
                    plaintext: &[1; MAX_PLAINTEXT],
                    context: vec![],
                }),
                &PEER,
            )
            .unwrap()
        {
            Output::Encrypt(o) => o.ciphertext_blob,
            other => panic!("{other:?}"),
        };
        // Client text quoted in errors, escaped as much as possible.
        let bad_id = "\u{1}".repeat(2048);
        let dup = "\u{1}".repeat(4000);
        let gdk = |key_id, n, context| {
            Operation::GenerateDataKey(kms_proto::GenerateDataKey {
                key_id,
                number_of_bytes: Some(n),
                key_spec: None,
                context,
            })
        };
        let ops = vec![
            Operation::DescribeKey(kms_proto::DescribeKey { key_id: &key }),
            Operation::DescribeKey(kms_proto::DescribeKey { key_id: &bad_id }),
            Operation::CreateKey(CreateKey {
                description: &long,
                ..CreateKey::default()
            }),
            Operation::ListKeys(ListKeys {
                limit: 1000,
                marker: None,
            }),
            gdk(&key, 1024, vec![]),
            gdk(&key, 1024, vec![(&dup, "a"), (&dup, "b")]),
            gdk(&bad_id, 1024, vec![]),
            Operation::GenerateDataKeyWithoutPlaintext(kms_proto::GenerateDataKey {
                key_id: &key,
                number_of_bytes: Some(1024),
                key_spec: None,
                context: vec![],
            }),
            Operation::Encrypt(kms_proto::Encrypt {
                key_id: &key,
                plaintext: &[2; MAX_PLAINTEXT],
                context: vec![],
            }),
            Operation::Decrypt(kms_proto::Decrypt {
                ciphertext_blob: &blob,
                key_id: None,
                context: vec![],
            }),
            Operation::Decrypt(kms_proto::Decrypt {
                ciphertext_blob: &blob,
                key_id: Some(&bad_id),
                context: vec![],
            }),
            Operation::ReEncrypt(kms_proto::ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: None,
                source_context: vec![],
                destination_key_id: &key,
                destination_context: vec![(&dup, "a"), (&dup, "b")],
            }),
            Operation::ReEncrypt(kms_proto::ReEncrypt {
                ciphertext_blob: &blob,
                source_key_id: None,
                source_context: vec![],
                destination_key_id: &key,
                destination_context: vec![],
            }),
            Operation::GenerateRandom(kms_proto::GenerateRandom {
                number_of_bytes: 1024,
            }),
            Operation::GenerateRandom(kms_proto::GenerateRandom {
                number_of_bytes: 5000,
            }),
        ];
        for op in &ops {
            let f = frame(RequestBody::Single(Ok(op.clone())));
            let req = kms_proto::decode_request(&f[4..], &DecodeLimits::default()).unwrap();
            let bound = answer_plan(&req, DEFAULT_MAX_ANSWER).bound;
            let out = answer(&svc, &f);
            assert!(out.len() <= bound, "{op:?}: {} > {bound}", out.len());
        }
        // And all of them in one batch.
        let f = frame(RequestBody::Batch(ops.into_iter().map(Ok).collect()));
        let req = kms_proto::decode_request(&f[4..], &DecodeLimits::default()).unwrap();
        let plan = answer_plan(&req, DEFAULT_MAX_ANSWER);
        assert_eq!(plan.runs, 15);
        assert!(answer(&svc, &f).len() <= plan.bound);
    }

    #[test]
    fn blob_overheads_are_within_the_bound() {
        const { assert!(crate::crypto::blob::OVERHEAD <= BLOB_OVERHEAD_MAX) };
        const { assert!(crate::crypto::hsm_blob::MIN_LEN - 1 <= BLOB_OVERHEAD_MAX) };
    }
}
