//! The service: every KMS operation, typed, independent of sockets and of
//! any wire encoding.
//!
//! Requests come in as `kms_proto` types (borrowing from the frame they
//! were decoded from) and leave as typed outputs; the flatbuffers encoding
//! is the edge's (`crate::wire`), so another encoding can sit beside it.
//! Each operation is one file under `ops/` implementing [`op::Op`], which
//! declares its plane, keys and bounds; [`op::execute`] runs one at a
//! [`op::Site`] (an I/O thread with cached keys only, or a thread that may
//! block). [`Service::call`] runs one operation to completion (tests, the
//! in-process baseline).

pub mod access;
pub mod aliases;
pub mod backing;
pub mod cache;
pub mod deletion;
pub mod hsm_executor;
pub mod imports;
pub mod key_id;
pub mod keys;
pub mod lifecycle;
pub mod loader;
pub mod op;
pub mod ops;
pub mod rotation;
pub mod scheduler;
pub mod states;

pub use keys::KeyRef;

use crate::crypto::{KeyMaterial, XaesKey};
use crate::identity::Identity;
use crate::keystore::{KeyRecord, Keystore, StoreError};
use crate::root::{RootError, RootOfTrust};
use kms_proto::{DecodeLimits, KeyMetadata, KeyState, KmsError, Operation, Output};
use parking_lot::Mutex;
#[cfg(any(test, feature = "internals"))]
use std::path::Path;
use std::sync::Arc;

pub use op::{ExecError, Site};

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
    /// `[access]` names a principal that does not parse or resolve.
    #[error("access.administrators or access.key_creators: {0}")]
    Access(String),
}

pub use key_id::{format_key_id, Arns};
pub(crate) use key_id::{KEY_ID_TEXT, MAX_KEY_ARN_TEXT};
/// What a ciphertext blob adds to its plaintext, for either format (61 and
/// 49 bytes).
pub(crate) const BLOB_OVERHEAD_MAX: usize = 64;

pub use backing::Backing;
pub(crate) use keys::ServiceState;
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
    pub queue_capacity: usize,
    /// The lifecycle's clock (deletion windows, rotation schedules,
    /// expiries).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// The lifecycle's limits (`[limits]` in the config).
    pub lifecycle_limits: LifecycleLimits,
    /// Most encryptions with one HSM-only key version:
    /// [`backing::HSM_INVOCATION_LIMIT`] (2^32, the bound for random 96-bit
    /// IVs) in the daemon. Tests lower it to see a version wear out and the
    /// key rotate (no test can do 2^32 encryptions); nothing raises it.
    pub hsm_invocation_limit: u64,
    /// Administrators, key creators (`[access]` in the config).
    pub access: access::AccessOptions,
    /// The ARN form (`[aws]` in the config); in-process services take
    /// the default.
    pub arns: Arns,
}

/// The key lifecycle's limits, from `[limits]` in the config (AWS's
/// resource quotas by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleLimits {
    /// Aliases per key (AWS: 50).
    pub max_aliases_per_key: u32,
    /// Tags per key (AWS: 50).
    pub max_tags_per_key: u32,
    /// Longest tag key, in characters (AWS: 128).
    pub max_tag_key_len: usize,
    /// Longest tag value, in characters (AWS: 256).
    pub max_tag_value_len: usize,
    /// Longest key description, in characters (AWS: 8192).
    pub max_description_len: usize,
    /// RotateKeyOnDemand calls per key over its life (AWS: 25).
    pub max_on_demand_rotations: u32,
}

impl Default for LifecycleLimits {
    fn default() -> Self {
        LifecycleLimits::from_config(&crate::config::Config::default())
    }
}

impl LifecycleLimits {
    /// The limits of `config`.
    pub fn from_config(config: &crate::config::Config) -> LifecycleLimits {
        let l = &config.limits;
        LifecycleLimits {
            max_aliases_per_key: l.max_aliases_per_key,
            max_tags_per_key: l.max_tags_per_key,
            max_tag_key_len: l.max_tag_key_len,
            max_tag_value_len: l.max_tag_value_len,
            max_description_len: l.max_description_len,
            max_on_demand_rotations: l.max_on_demand_rotations,
        }
    }
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
            queue_capacity: config.dispatch.queue_capacity,
            clock: crate::clock::daemon_clock(),
            lifecycle_limits: LifecycleLimits::from_config(config),
            hsm_invocation_limit: backing::HSM_INVOCATION_LIMIT,
            access: config.access.options(),
            // `Config::validate` refused an `[aws]` without a form (the
            // daemon validates before it builds anything).
            arns: config
                .aws
                .arns()
                .expect("a validated config has a valid [aws] (Config::validate)"),
        }
    }
}

/// The key-management service.
pub struct Service {
    core: Arc<ServiceState>,
    loader: loader::KeyLoader,
    limits: DecodeLimits,
    max_keys: u64,
    load_timeout: std::time::Duration,
    lifecycle_limits: LifecycleLimits,
    /// See [`ServiceOptions::hsm_invocation_limit`].
    hsm_invocation_limit: u64,
    /// Rotations the data path asked for (HSM-only key versions near their
    /// limit), and their waiters.
    rotations: rotation::Requests,
    /// Wakes the scheduler before its interval (a rotation asked for).
    wake: scheduler::Wake,
    /// Alias name to key id, as the store has them (see [`aliases`]).
    aliases: aliases::AliasTable,
    /// Administrators and key creators, compiled.
    access: access::AccountAccess,
    /// Request-rate quotas: off for in-process callers until set
    /// ([`Service::quotas`]); the daemon applies `[quotas]` before serving.
    quotas: crate::quota::Quotas,
    /// The audit log, once the server opened it (VerifyAuditSeals checks
    /// its seals and reports its head).
    audit: std::sync::OnceLock<Arc<crate::audit::AuditLog>>,
}

pub(crate) use crate::errors::internal;

impl Service {
    #[cfg(any(test, feature = "internals"))]
    /// Opens the service over the keystore in `data_dir`.
    pub fn open(
        data_dir: &Path,
        root: Arc<dyn RootOfTrust>,
        limits: DecodeLimits,
        max_keys: u64,
    ) -> Result<Service, ServiceError> {
        Service::with_store(Keystore::open(data_dir)?, root, limits, max_keys)
    }

    #[cfg(any(test, feature = "internals"))]
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
                queue_capacity: crate::config::DispatchConfig::default().queue_capacity,
                clock: Arc::new(crate::clock::SystemClock),
                lifecycle_limits: LifecycleLimits::default(),
                hsm_invocation_limit: backing::HSM_INVOCATION_LIMIT,
                access: access::AccessOptions::default(),
                arns: Arns::default(),
            },
        )
    }

    /// A service over `store` with every option given.
    pub fn with_options(
        store: Keystore,
        root: Arc<dyn RootOfTrust>,
        options: ServiceOptions,
    ) -> Result<Service, ServiceError> {
        let access = access::AccountAccess::new(options.access).map_err(ServiceError::Access)?;
        let check = root.wrap(&KeyMaterial::from_bytes([0; 32]))?;
        store.bind_root(root.kind(), &check)?;
        let c = &options.cache;
        // The key loader reads through a connection of its own.
        let reader = store.open_reader()?;
        let aliases = aliases::AliasTable::from_rows(store.all_aliases()?);
        let mut store = store;
        // Keys stored before kmsd had policies get the administrators'
        // default policy, once, before anything is served.
        let fill = access::default_policy(&access, None).map_err(ServiceError::Access)?;
        let filled = store.fill_missing_policies(&fill, options.clock.now())?;
        if filled > 0 {
            tracing::info!(keys = filled, "keys without a key policy given the default policy");
        }
        let core = Arc::new(ServiceState {
            store: Mutex::new(store),
            root,
            cache: cache::KeyCache::new(c.capacity, std::time::Duration::from_secs(c.ttl_secs)),
            usage: Default::default(),
            clock: options.clock,
            administrators: fill,
            arns: options.arns,
        });
        let loader = loader::KeyLoader::start(
            Arc::clone(&core),
            Box::new(reader),
            loader::LoaderConfig {
                threads: options.loader_threads,
                batch_max: c.batch_max,
                batching: c.batching,
                queue_capacity: options.queue_capacity,
            },
        )
        .map_err(ServiceError::Threads)?;
        Ok(Service {
            core,
            loader,
            limits: options.limits,
            max_keys: options.max_keys,
            load_timeout: std::time::Duration::from_millis(c.load_timeout_ms),
            aliases,
            lifecycle_limits: options.lifecycle_limits,
            hsm_invocation_limit: options.hsm_invocation_limit.max(1),
            rotations: Default::default(),
            wake: Default::default(),
            access,
            quotas: crate::quota::Quotas::from_config(
                &crate::config::QuotasConfig {
                    profile: crate::config::QuotaProfile::Off,
                    ..Default::default()
                },
                &crate::config::AwsConfig::default(),
            )
            .expect("the off profile is valid"),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// Attaches the audit log (once, at start).
    pub fn set_audit(&self, log: Arc<crate::audit::AuditLog>) {
        let _ = self.audit.set(log);
    }

    /// The audit log, if it is on.
    pub fn audit(&self) -> Option<&Arc<crate::audit::AuditLog>> {
        self.audit.get()
    }

    /// The root of trust.
    pub(crate) fn root(&self) -> &dyn RootOfTrust {
        &*self.core.root
    }

    /// The loader (prefetching keys off the I/O threads, its counters).
    pub fn loader(&self) -> &loader::KeyLoader {
        &self.loader
    }

    /// Now, by the lifecycle's clock (seconds since the Unix epoch).
    pub fn now(&self) -> i64 {
        self.core.clock.now()
    }

    /// How long a request waits for its keys.
    pub fn load_timeout(&self) -> std::time::Duration {
        self.load_timeout
    }

    #[cfg(any(test, feature = "internals"))]
    /// Keys cached now.
    pub fn cached_keys(&self) -> usize {
        self.core.cache.len()
    }

    /// Decoding limits in force.
    pub fn limits(&self) -> &DecodeLimits {
        &self.limits
    }

    /// The key `r` names at `site`: from the cache (with the version it
    /// needs); else, off the I/O threads, from the frame's prefetch (a
    /// failed load is answered with its error, never loaded again) or
    /// through the key loader, waiting at most the load timeout.
    pub(crate) fn key_at(&self, r: KeyRef, site: Site<'_>) -> Result<Arc<LoadedKey>, ExecError> {
        // The hot path: one read lock, one hash lookup.
        if let Some(k) = self.core.cache.get(&r.id) {
            if r.version.is_none_or(|v| k.has_version(v)) {
                return Ok(k);
            }
        }
        let (prefetched, thread) = match site {
            Site::Io => return Err(ExecError::NotReady),
            Site::Blocking { prefetched } => (prefetched, None),
            Site::Hsm { thread, prefetched } => (prefetched, Some(thread)),
        };
        // A frame that waited for its keys uses what it got, failures
        // included: a second load would hold this thread up to another
        // load timeout for a root that just failed to answer.
        if let Some(loaded) = prefetched.and_then(|p| p.get_ref(&r)) {
            let k = loaded?;
            // A key changed since its prefetch is loaded again.
            if r.version.is_none_or(|v| k.has_version(v)) && self.is_fresh(&k) {
                return Ok(k);
            }
        }
        Ok(match thread {
            Some(t) => t.load(r)?,
            None => self.loader.load_blocking(r, self.load_timeout)?,
        })
    }

    #[cfg(any(test, feature = "internals"))]
    /// Loads a key (current version) at `site`.
    pub fn load_key(&self, id: &[u8; 16], site: Site<'_>) -> Result<Arc<LoadedKey>, ExecError> {
        self.key_at(
            KeyRef {
                id: *id,
                version: None,
            },
            site,
        )
    }

    /// Metadata as clients see it.
    pub fn metadata(&self, record: &KeyRecord) -> KeyMetadata {
        KeyMetadata {
            key_id: format_key_id(&record.key_id),
            arn: self.arns().key_arn(&record.key_id),
            creation_date: record.created_at,
            enabled: record.state == KeyState::Enabled,
            description: record.description.clone(),
            key_state: record.state,
            key_usage: kms_proto::KeyUsage::EncryptDecrypt,
            key_spec: kms_proto::KeySpec::SymmetricDefault,
            origin: record.origin,
            current_version: record.current_version,
            // An EXTERNAL key with material: whether and when it expires
            // (the expiry is kept exactly when it does).
            valid_to: record.valid_to,
            expiration_model: (record.origin == kms_proto::Origin::External
                && record.current_version > 0)
                .then_some(if record.valid_to.is_some() {
                    kms_proto::ExpirationModel::KeyMaterialExpires
                } else {
                    kms_proto::ExpirationModel::KeyMaterialDoesNotExpire
                }),
            // Filled in by the lifecycle operations' records.
            ..KeyMetadata::default()
        }
    }

    #[cfg(any(test, feature = "internals"))]
    /// Runs one operation for `caller` at `site` (an I/O thread runs only
    /// data-plane operations on cached keys; see [`op::Site`]).
    pub fn execute(
        &self,
        op: &Operation<'_>,
        caller: &Identity,
        site: Site<'_>,
    ) -> Result<Output, ExecError> {
        op::execute(self, op, caller, site, &[])
    }

    /// Runs one operation of an admitted request, with the keys admission
    /// looked up.
    pub(crate) fn run_admitted(
        &self,
        op: &Operation<'_>,
        caller: &Identity,
        site: Site<'_>,
        resolved: &[keys::Needed],
    ) -> Result<Output, ExecError> {
        op::execute(self, op, caller, site, resolved)
    }

    /// The request-rate quotas (`Quotas::reload` sets the config's).
    pub fn quotas(&self) -> &crate::quota::Quotas {
        &self.quotas
    }

    /// Whether `key` (taken from the cache earlier) is unchanged since: see
    /// [`cache::KeyCache::is_fresh`].
    #[inline]
    pub(crate) fn is_fresh(&self, key: &LoadedKey) -> bool {
        self.core.cache.is_fresh(key)
    }

    /// The cached entry of a key, if it holds the version `r` needs
    /// (admission looks each key up once).
    pub(crate) fn cached(&self, r: &KeyRef) -> Option<Arc<LoadedKey>> {
        let k = self
            .core
            .cache
            .get(&r.id)
            .filter(|k| r.version.is_none_or(|v| k.has_version(v)));
        if let Some(m) = crate::metrics::get() {
            m.cache_lookup(k.is_some());
        }
        k
    }

    /// Sets the service's gauges and counters: the cache, the key loader,
    /// the HSM executor's queue, the HSM's health (a metrics sampler, run
    /// before a scrape or a status answer; never on the data path).
    pub(crate) fn sample(&self, m: &crate::metrics::Metrics) {
        use crate::metrics::names;
        m.gauge(names::CACHE_KEYS, &[]).set(self.core.cache.len() as f64);
        let s = self.loader.stats();
        m.counter(names::LOADER_LOADED, &[]).absolute(s.loaded);
        m.counter(names::LOADER_FAILED, &[]).absolute(s.failed);
        m.counter(names::LOADER_EXPIRED, &[]).absolute(s.expired);
        let depth = |queue: &'static str, n: usize| {
            m.gauge(names::QUEUE_DEPTH, &[("queue", queue)]).set(n as f64);
        };
        depth("hsm", self.loader.executor().queued());
        depth("loader_waiters", self.loader.waiters());
        // Quota refusals are counted in their buckets (one atomic add, on
        // the refusal only); copied here at scrape time.
        for (principal, class, n) in self.quotas.throttled() {
            m.counter_labelled(names::THROTTLED, vec![("principal", principal), ("class", class)])
                .absolute(n);
        }
        if let Some(h) = self.core.root.health() {
            m.gauge(names::HSM_UP, &[]).set(if h.up { 1.0 } else { 0.0 });
            m.counter(names::HSM_REBUILDS, &[]).absolute(h.stats.rebuilds);
            m.counter(names::HSM_FAILED_REBUILDS, &[])
                .absolute(h.stats.failed_rebuilds);
            m.counter(names::HSM_FAST_FAILURES, &[])
                .absolute(h.stats.fast_failures);
        }
    }

    #[cfg(any(test, feature = "internals"))]
    /// Runs one operation to completion on the calling thread (tests, the
    /// in-process baseline): it may block for the store and key loads.
    pub fn call(&self, op: &Operation<'_>, caller: &Identity) -> Result<Output, KmsError> {
        match self.execute(op, caller, Site::Blocking { prefetched: None }) {
            Ok(o) => Ok(o),
            Err(ExecError::Kms(e)) => Err(e),
            Err(ExecError::NotReady) => unreachable!("a blocking site always gets its keys"),
        }
    }

    /// Inserts a freshly created key, with its tags and policy, into the
    /// store (one transaction) and the cache. `material` is the backing key of a key
    /// kmsd made; an HSM-only key's (`None`) was generated in the HSM by
    /// the caller and stores nothing wrapped; an EXTERNAL key (`None`) has
    /// no version until its material is imported.
    pub(crate) fn store_new_key(
        &self,
        record: KeyRecord,
        material: Option<&KeyMaterial>,
        tags: &[kms_proto::Tag<'_>],
        policy: &crate::keystore::access::StoredPolicy,
    ) -> Result<(), KmsError> {
        let key_access = access::KeyAccess::compile(self.arns(), &record.key_id, policy, &[], Vec::new())?;
        let external = record.origin == kms_proto::Origin::External;
        // Taken before the store write, as every load does: an
        // invalidation meanwhile keeps this entry out of the cache.
        let seen = self.core.cache.revision(&record.key_id);
        let wrapped = match material {
            Some(m) => self.core.root.wrap(m).map_err(|e| match e {
                RootError::Unavailable(_) => crate::errors::root("wrapping backing key", e),
                e => internal("wrapping backing key", e),
            })?,
            None => Vec::new(),
        };
        let first = crate::keystore::WrappedVersion {
            version: 1,
            wrapped,
        };
        {
            let mut store = self.core.store.lock();
            // An HSM-only key's slot was taken by its pending record, before
            // it was generated (`ops::create_key`).
            if material.is_some() || external {
                let count = store
                    .count_keys_and_pending()
                    .map_err(|e| internal("counting keys", e))?;
                if count >= self.max_keys {
                    return Err(self.store_full());
                }
            }
            store
                .insert_new_key(&record, (!external).then_some(&first), tags, Some(policy))
                .map_err(|e| internal("storing key", e))?;
        }
        let id = record.key_id;
        let loaded = if external {
            // No material: cached for its state (every use but reading it
            // is refused: pending import), as a load would make it.
            LoadedKey::new(record, 0, key_access)
        } else {
            let backing = match material {
                Some(m) => Backing::Soft(XaesKey::new(m)),
                None => Backing::Hsm(self.core.usage.version(&record.key_id, 1, 0)),
            };
            let loaded = LoadedKey::new(record, 1, key_access);
            loaded.fill(1, backing);
            loaded
        };
        self.loader.forget_failure(&id);
        self.core.cache.insert(Arc::new(loaded), seen);
        Ok(())
    }

    /// LimitExceededException: the store holds `limits.max_keys` keys.
    pub(crate) fn store_full(&self) -> KmsError {
        crate::errors::store_full(self.max_keys)
    }

    /// Most keys the store may hold.
    pub(crate) fn max_keys(&self) -> u64 {
        self.max_keys
    }

    /// Settles HSM-only keys left pending by a CreateKey that a crash
    /// interrupted (see [`ops::create_key::reconcile_hsm_only_keys`]). The
    /// daemon calls it at start-up, before serving.
    ///
    /// # Errors
    ///
    /// The store failing.
    pub fn reconcile_hsm_only_keys(&self) -> Result<usize, StoreError> {
        ops::create_key::reconcile_hsm_only_keys(self)
    }

    /// Destroys import wrapping keys that the root of trust holds and no
    /// stored import names (see
    /// [`imports::reconcile_import_wrapping_keys`]). The daemon calls it at
    /// start-up, before serving.
    ///
    /// # Errors
    ///
    /// The store failing.
    pub fn reconcile_import_wrapping_keys(&self) -> Result<usize, StoreError> {
        imports::reconcile_import_wrapping_keys(self)
    }

    /// The store, for control-plane operations (workers only).
    pub(crate) fn store(&self) -> parking_lot::MutexGuard<'_, Keystore> {
        self.core.store.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_overheads_are_within_the_bound() {
        const { assert!(crate::crypto::blob::OVERHEAD <= BLOB_OVERHEAD_MAX) };
        const { assert!(crate::crypto::hsm_blob::MIN_LEN - 1 <= BLOB_OVERHEAD_MAX) };
    }
}
