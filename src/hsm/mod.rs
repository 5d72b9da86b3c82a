//! The PKCS#11 layer: a pool of sessions on one token, with fault
//! classification and recovery, over the `cryptoki` crate.
//!
//! Layout:
//!
//! - `ffi`: the few raw PKCS#11 calls cryptoki cannot make for us (one-call
//!   wrap and attribute read, arbitrary mechanism numbers, zeroized key
//!   buffers). The only `unsafe` code in kmsd's HSM support; its module docs
//!   say why each call is there and why it is sound.
//! - `device`: loading the module, `C_Initialize(OS_LOCKING_OK)`, finding the
//!   token by label, sessions, login, the root key.
//! - [`error`]: [`HsmError`], [`SetupError`] (one-line start-up messages that
//!   say what to do) and [`classify`]: CKR_* codes to [`FaultClass`].
//! - [`pin`]: [`Pin`], from a 0600 file or an environment variable.
//! - this module: [`Hsm`], the pool and its recovery, and the operations:
//!   root-key wrap/unwrap (RFC 5649 KWP, the same bytes as
//!   [`crate::root::FileRoot`]) and HSM-only AES-256-GCM keys.
//!
//! **Threads.** Every call blocks in the PKCS#11 module (tens of
//! microseconds on SoftHSM, milliseconds on a network HSM). Callers are
//! worker or loader threads, never I/O threads (ARCHITECTURE.md).
//! `cryptoki::Session` is `Send` but not `Sync`, so each pool session sits
//! behind its own mutex; a caller takes a free one (round robin, then waits
//! up to [`SESSION_WAIT`]).
//!
//! **Recovery.** A failed call is classified ([`FaultClass`]):
//!
//! - SessionLost: the session is closed and reopened (login again if
//!   needed, find the root key again, copy it again) and the call is
//!   retried once.
//! - DeviceFatal: the context is rebuilt at once (close every session,
//!   `C_Finalize`, `C_Initialize`, find the slot, login, find the key, open
//!   the sessions) and the call retried once. If the rebuild fails the HSM
//!   is *down*: calls fail fast with [`HsmError::Unavailable`] without
//!   touching the module, and the first call after the backoff (50 ms,
//!   doubling to 5 s) tries the rebuild again. So kmsd recovers by itself
//!   when the HSM comes back. Going down and recovering are logged once
//!   each.
//! - Retryable: returned as is (transient; the client retries).
//! - Permanent: returned as is.
//!
//! **Ambiguous failures.** SoftHSM answers a wrapped key that fails its
//! integrity check, and a GCM tag mismatch, with `CKR_GENERAL_ERROR`, which
//! PKCS#11 calls unrecoverable. For `C_UnwrapKey` and `C_Decrypt` only, a
//! `CKR_GENERAL_ERROR` or `CKR_FUNCTION_FAILED` is checked with
//! `C_GetTokenInfo`: if the token answers, the input was bad (Permanent);
//! if not, the device is (DeviceFatal). One corrupt blob must not cause an
//! outage.
//!
//! **One module per process.** A PKCS#11 module is initialised once per
//! process and shared by everything in it; a rebuild's `C_Finalize` ends
//! every session of the process. kmsd opens one [`Hsm`]; tests that open
//! several do so one after another.

mod device;
pub mod error;
mod ffi;
pub mod pin;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki_sys::{
    CKR_BUFFER_TOO_SMALL, CKR_FUNCTION_FAILED, CKR_GENERAL_ERROR, CK_OBJECT_HANDLE, CK_RV,
};
use parking_lot::{Mutex, MutexGuard, RwLock};
use zeroize::Zeroizing;

use crate::config::Pkcs11Config;
use crate::crypto::KeyMaterial;
use device::{close_session, Device, Pooled, Settings};
pub use error::{classify, rv_name, CallFailure, FaultClass, HsmError, SetupError};
pub use pin::Pin;

/// Longest a call waits for a free pool session (or for a rebuild in
/// progress) before failing with [`HsmError::Unavailable`].
pub const SESSION_WAIT: Duration = Duration::from_secs(2);
/// First delay before retrying a failed rebuild.
pub const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest delay between rebuild attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest a rebuild waits for in-flight calls to leave the old context.
const REBUILD_WAIT: Duration = Duration::from_secs(10);
/// Length of an RFC 5649 wrapping of a 32-byte key.
const WRAPPED_LEN: usize = KeyMaterial::LEN + 8;
/// AES-GCM IV length kmsd accepts (SoftHSM accepts others; we do not).
pub const GCM_IV_LEN: usize = 12;
/// AES-GCM tag length.
pub const GCM_TAG_LEN: usize = 16;

/// A fault the pool injects before its next session call: a test hook for
/// the recovery paths, since SoftHSM cannot be made to fail on demand.
/// Costs one relaxed atomic load per call when nothing is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// The next call returns this PKCS#11 code without reaching the module.
    ReturnCode(CK_RV),
    /// The pool session the next call uses is closed in the module first,
    /// so the module itself answers `CKR_SESSION_HANDLE_INVALID`.
    CloseSession,
    /// The session copy of the root key is destroyed in the module first,
    /// so it answers `CKR_(UN)WRAPPING_KEY_HANDLE_INVALID`. Does nothing
    /// without `session_copy` (the token key is never destroyed).
    DestroyRootCopy,
    /// `C_Finalize` is called on the module first (once no other call is in
    /// it), so it answers `CKR_CRYPTOKI_NOT_INITIALIZED` (a real
    /// device-fatal code).
    Finalize,
    /// The next AES-GCM encryption reports an IV other than the one kmsd
    /// chose, as an HSM that writes its own IVs (FIPS mode) would; the
    /// encryption must then fail. Not queued: it waits for the next
    /// encryption, whatever calls come first.
    ForeignGcmIv,
}

/// Counters of what the pool did, for tests, `kmsd hsm check` and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HsmStats {
    /// Session calls that reached the module (or an injected fault).
    pub calls: u64,
    /// Pool sessions opened (including the initial ones).
    pub sessions_opened: u64,
    /// Calls that lost their session and retried on a new one.
    pub session_recoveries: u64,
    /// Successful context rebuilds.
    pub rebuilds: u64,
    /// Failed rebuild attempts.
    pub failed_rebuilds: u64,
    /// Calls refused at once because the HSM was down.
    pub fast_failures: u64,
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    sessions_opened: AtomicU64,
    session_recoveries: AtomicU64,
    rebuilds: AtomicU64,
    failed_rebuilds: AtomicU64,
    fast_failures: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// What `kmsd hsm check` prints about an opened HSM.
#[derive(Clone, Debug)]
pub struct HsmInfo {
    /// Module path.
    pub module: PathBuf,
    /// Library description and version from `C_GetInfo`.
    pub library: String,
    /// Slot id of the token.
    pub slot_id: u64,
    /// Token label, model and serial number.
    pub token_label: String,
    /// Token model.
    pub token_model: String,
    /// Token serial number.
    pub token_serial: String,
    /// Root key label.
    pub key_label: String,
    /// Root key attributes as read from the token.
    pub key_attributes: Vec<(String, bool)>,
    /// KWP mechanism number in use.
    pub kwp_mechanism: u64,
    /// Pool sessions.
    pub pool_size: usize,
    /// Whether sessions use a session copy of the root key.
    pub session_copy: bool,
}

struct State {
    /// `None` while the HSM is down.
    device: Option<Device>,
    sessions: Box<[Mutex<Option<Pooled>>]>,
}

struct Health {
    /// When the HSM went down (None while up).
    since: Option<Instant>,
    /// Next rebuild attempt no earlier than this.
    retry_at: Instant,
    /// Delay after the next failed attempt.
    backoff: Duration,
    /// A rebuild is running.
    rebuilding: bool,
    /// Why the last attempt failed (no secrets: PKCS#11 codes and labels).
    last_error: String,
}

struct Faults {
    armed: AtomicBool,
    queue: Mutex<std::collections::VecDeque<InjectedFault>>,
    foreign_iv: AtomicBool,
}

/// A pool of PKCS#11 sessions on the token holding the root key, with
/// recovery. See the module docs.
pub struct Hsm {
    settings: Settings,
    pin: Pin,
    state: RwLock<State>,
    health: Mutex<Health>,
    /// Mirrors `health.since.is_some()` for the lock-free fast path.
    down: AtomicBool,
    /// Incremented by every successful rebuild.
    generation: AtomicU64,
    /// Incremented whenever a session is opened: cached object handles of
    /// HSM keys are re-found when it changes.
    epoch: AtomicU64,
    next_session: AtomicUsize,
    faults: Faults,
    counters: Counters,
}

impl fmt::Debug for Hsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hsm")
            .field("module", &self.settings.module)
            .field("token_label", &self.settings.token_label)
            .field("key_label", &self.settings.key_label)
            .field("pin", &"<redacted>")
            .field("available", &self.is_available())
            .finish()
    }
}

/// An HSM-only AES-256 key, found by its `CKA_ID`. Holds no key material:
/// only the id and a cached object handle.
pub struct HsmKey {
    id: Vec<u8>,
    /// (epoch, handle) of the last lookup.
    cached: Mutex<(u64, CK_OBJECT_HANDLE)>,
}

impl HsmKey {
    /// The key's `CKA_ID`.
    pub fn id(&self) -> &[u8] {
        &self.id
    }
}

impl fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HsmKey(id {})", hex_id(&self.id))
    }
}

fn hex_id(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

impl Hsm {
    /// Opens the HSM described by `config`: reads the PIN, loads the module,
    /// initialises it, finds the token, logs in, finds the root key and opens
    /// `pool_size` sessions.
    ///
    /// # Errors
    ///
    /// [`HsmError::Setup`] with a one-line message saying what to do.
    pub fn open(config: &Pkcs11Config) -> Result<Hsm, HsmError> {
        let settings = Settings::from_config(config)?;
        let pin = Pin::from_config(config)?;
        let (device, sessions) = connect(&settings, &pin).map_err(setup_error)?;
        let n = sessions.len() as u64;
        let hsm = Hsm {
            settings,
            pin,
            state: RwLock::new(State {
                device: Some(device),
                sessions: sessions.into_iter().map(|p| Mutex::new(Some(p))).collect(),
            }),
            health: Mutex::new(Health {
                since: None,
                retry_at: Instant::now(),
                backoff: BACKOFF_START,
                rebuilding: false,
                last_error: String::new(),
            }),
            down: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            epoch: AtomicU64::new(n),
            next_session: AtomicUsize::new(0),
            faults: Faults {
                armed: AtomicBool::new(false),
                queue: Mutex::new(Default::default()),
                foreign_iv: AtomicBool::new(false),
            },
            counters: Counters::default(),
        };
        hsm.counters.sessions_opened.store(n, Ordering::Relaxed);
        Ok(hsm)
    }

    /// Whether the HSM is up (false while down and waiting to rebuild).
    pub fn is_available(&self) -> bool {
        !self.down.load(Ordering::Acquire)
    }

    /// The counters so far.
    pub fn stats(&self) -> HsmStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HsmStats {
            calls: get(&c.calls),
            sessions_opened: get(&c.sessions_opened),
            session_recoveries: get(&c.session_recoveries),
            rebuilds: get(&c.rebuilds),
            failed_rebuilds: get(&c.failed_rebuilds),
            fast_failures: get(&c.fast_failures),
        }
    }

    /// Test hook: the next session call suffers `fault` (faults queue up,
    /// one per call). See [`InjectedFault`].
    pub fn inject_fault(&self, fault: InjectedFault) {
        if fault == InjectedFault::ForeignGcmIv {
            self.faults.foreign_iv.store(true, Ordering::Release);
            return;
        }
        self.faults.queue.lock().push_back(fault);
        self.faults.armed.store(true, Ordering::Release);
    }

    /// Describes the module, token and root key (for `kmsd hsm check`).
    ///
    /// # Errors
    ///
    /// As any call.
    pub fn info(&self) -> Result<HsmInfo, HsmError> {
        self.call("C_GetAttributeValue", |device, pooled, _| {
            let root = device.find_root(pooled.session(), &self.settings)?;
            let key_attributes = device.root_attributes(pooled.session(), root)?;
            Ok(HsmInfo {
                module: self.settings.module.clone(),
                library: device.library.clone(),
                slot_id: device.slot.id(),
                token_label: self.settings.token_label.clone(),
                token_model: device.token_model.clone(),
                token_serial: device.token_serial.clone(),
                key_label: self.settings.key_label.clone(),
                key_attributes,
                kwp_mechanism: self.settings.configured_mechanism,
                pool_size: self.settings.pool_size,
                session_copy: self.settings.session_copy,
            })
        })
    }

    // -----------------------------------------------------------------
    // Root key: wrap and unwrap backing keys

    /// Wraps a 32-byte backing key under the root key with the configured
    /// KWP mechanism: the key is imported as an extractable session object,
    /// wrapped with one `C_WrapKey` into a 40-byte buffer, and destroyed.
    ///
    /// # Errors
    ///
    /// [`HsmError`]; transient ones satisfy [`HsmError::is_transient`].
    pub fn wrap_key(&self, key: &KeyMaterial) -> Result<Vec<u8>, HsmError> {
        self.wrap_key_with(key, false)
    }

    /// [`Hsm::wrap_key`] with cryptoki's two-call pattern (size query, then
    /// the wrap) when `two_calls`: kept only so the benchmark can compare.
    #[doc(hidden)]
    pub fn wrap_key_with(&self, key: &KeyMaterial, two_calls: bool) -> Result<Vec<u8>, HsmError> {
        let mechanism = self.settings.kwp_mechanism;
        self.call("C_WrapKey", |device, pooled, _| {
            let session = pooled.handle();
            let object = device
                .raw
                .create_wrappable_key(session, key.expose())
                .map_err(|rv| CallFailure::new("C_CreateObject", rv))?;
            let wrapped = if two_calls {
                device
                    .raw
                    .wrap_two_calls(session, mechanism, pooled.root, object)
            } else {
                let mut out = vec![0u8; WRAPPED_LEN];
                device
                    .raw
                    .wrap(session, mechanism, pooled.root, object, &mut out)
                    .map(|n| {
                        out.truncate(n);
                        out
                    })
            };
            let destroyed = device.raw.destroy(session, object);
            let wrapped = wrapped.map_err(|rv| CallFailure::new("C_WrapKey", rv))?;
            destroyed.map_err(|rv| CallFailure::new("C_DestroyObject", rv))?;
            if wrapped.len() != WRAPPED_LEN {
                return Err(HsmError::Invalid(format!(
                    "the HSM wrapped a 32-byte key into {} bytes, not {WRAPPED_LEN}: is \
                     root.pkcs11.kwp_mechanism ({mechanism:#x}) RFC 5649 key wrap with padding?",
                    wrapped.len()
                )));
            }
            Ok(wrapped)
        })
    }

    /// Unwraps a backing key: `C_UnwrapKey` into an extractable,
    /// non-sensitive session object (no `CKA_VALUE_LEN` in the template),
    /// one `C_GetAttributeValue(CKA_VALUE)` into a zeroized 32-byte buffer,
    /// then `C_DestroyObject`.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] if the unwrapped key is not exactly 32 bytes
    /// (SoftHSM accepts KWP wrappings of any length, and AES "keys" of 20
    /// bytes); [`HsmError::Call`] with a Permanent class for a wrapped key
    /// that does not verify; transient errors otherwise.
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<KeyMaterial, HsmError> {
        self.unwrap_key_with(wrapped, false)
    }

    /// [`Hsm::unwrap_key`], reading the value with cryptoki's two-call
    /// pattern when `two_calls`: kept only so the benchmark can compare.
    #[doc(hidden)]
    pub fn unwrap_key_with(
        &self,
        wrapped: &[u8],
        two_calls: bool,
    ) -> Result<KeyMaterial, HsmError> {
        let (mechanism, private) = (self.settings.kwp_mechanism, self.settings.private_unwrapped);
        self.call("C_UnwrapKey", |device, pooled, _| {
            let session = pooled.handle();
            let object = device
                .raw
                .unwrap(session, mechanism, pooled.root, wrapped, private)
                .map_err(|rv| input_or_device(device, CallFailure::new("C_UnwrapKey", rv)))?;
            let mut buf = Zeroizing::new([0u8; KeyMaterial::LEN]);
            let read = if two_calls {
                device
                    .raw
                    .get_value_two_calls(session, object, buf.as_mut_slice())
            } else {
                device.raw.get_value(session, object, buf.as_mut_slice())
            };
            let destroyed = device.raw.destroy(session, object);
            let len = match read {
                Ok(len) => len,
                Err(CKR_BUFFER_TOO_SMALL) => {
                    return Err(HsmError::Invalid(
                        "the unwrapped key is longer than 32 bytes".to_owned(),
                    ))
                }
                Err(rv) => return Err(CallFailure::new("C_GetAttributeValue", rv).into()),
            };
            destroyed.map_err(|rv| CallFailure::new("C_DestroyObject", rv))?;
            if len != KeyMaterial::LEN {
                return Err(HsmError::Invalid(format!(
                    "the unwrapped key is {len} bytes, not 32"
                )));
            }
            Ok(KeyMaterial::from_bytes(*buf))
        })
    }

    // -----------------------------------------------------------------
    // HSM-only keys: AES-256-GCM inside the token

    /// Generates an AES-256 token key that never leaves the HSM
    /// (`CKA_SENSITIVE`, not `CKA_EXTRACTABLE`; encrypt/decrypt only) with
    /// `label` and `CKA_ID` `id`.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] if a key with this id exists or `id` is empty;
    /// otherwise as any call.
    pub fn generate_key(&self, label: &str, id: &[u8]) -> Result<HsmKey, HsmError> {
        if id.is_empty() {
            return Err(HsmError::Invalid("an HSM key id must not be empty".into()));
        }
        self.call("C_GenerateKey", |_device, pooled, epoch| {
            if !find_by_id(pooled, id)?.is_empty() {
                return Err(HsmError::Invalid(format!(
                    "an HSM key with id {} already exists",
                    hex_id(id)
                )));
            }
            let handle = pooled
                .session()
                .generate_key(&device::AES_KEY_GEN, &device::hsm_key_template(label, id))
                .map_err(|e| CallFailure::from_cryptoki("C_GenerateKey", &e))?;
            Ok(HsmKey {
                id: id.to_vec(),
                cached: Mutex::new((epoch, handle.handle())),
            })
        })
    }

    /// Finds an HSM-only key by `CKA_ID`.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] if several keys have this id; otherwise as any
    /// call.
    pub fn find_key(&self, id: &[u8]) -> Result<Option<HsmKey>, HsmError> {
        self.call("C_FindObjects", |_device, pooled, epoch| {
            Ok(unique(find_by_id(pooled, id)?, id)?.map(|handle| HsmKey {
                id: id.to_vec(),
                cached: Mutex::new((epoch, handle)),
            }))
        })
    }

    /// Destroys an HSM-only key in the token. (Session copies made on other
    /// sessions live until those sessions close.)
    ///
    /// # Errors
    ///
    /// As any call; [`HsmError::Invalid`] if it no longer exists.
    pub fn destroy_key(&self, key: &HsmKey) -> Result<(), HsmError> {
        self.call("C_DestroyObject", |device, pooled, epoch| {
            if let Some(copy) = pooled.vault_copies.lock().remove(&key.id) {
                let _ = device.raw.destroy(pooled.handle(), copy);
            }
            let handle = self.token_key_handle(pooled, key, epoch)?;
            device
                .raw
                .destroy(pooled.handle(), handle)
                .map_err(|rv| CallFailure::new("C_DestroyObject", rv).into())
        })
    }

    /// AES-256-GCM encryption in the HSM with a caller-supplied IV of
    /// exactly 12 bytes, `aad`, and a 16-byte tag. Returns the ciphertext
    /// followed by the tag.
    ///
    /// After the call the IV in the mechanism parameters is compared with
    /// the one given: an HSM may write an IV of its own there (PKCS#11 lets
    /// a token in FIPS mode generate GCM IVs), and a ciphertext under an IV
    /// kmsd did not choose breaks the count of random IVs per key that the
    /// 2^32 limit rests on (and its blob would carry the wrong IV). That is
    /// a hard failure: logged, and no ciphertext returned.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] for an IV that is not 12 bytes (refused before
    /// the HSM sees it: SoftHSM would accept other lengths), or when the
    /// HSM used another IV.
    pub fn gcm_encrypt(
        &self,
        key: &HsmKey,
        iv: &[u8],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, HsmError> {
        let iv = gcm_iv(iv)?;
        self.call("C_Encrypt", |device, pooled, epoch| {
            let handle = self.key_handle(device, pooled, key, epoch)?;
            let mut out = vec![0u8; plaintext.len() + GCM_TAG_LEN];
            let (n, mut seen) = device
                .raw
                .gcm_encrypt(pooled.handle(), handle, iv, aad, plaintext, &mut out)
                .map_err(|rv| CallFailure::new("C_Encrypt", rv))?;
            if self.faults.foreign_iv.load(Ordering::Relaxed)
                && self.faults.foreign_iv.swap(false, Ordering::AcqRel)
            {
                seen[0] ^= 0xff;
            }
            if seen != *iv {
                tracing::error!(
                    key_id = %hex_id(&key.id),
                    "the HSM encrypted with an AES-GCM IV of its own, not the one kmsd chose \
                     (a token that generates IVs, e.g. in FIPS mode, cannot hold HSM-only keys); \
                     the ciphertext is discarded"
                );
                return Err(HsmError::Invalid(
                    "the HSM used an AES-GCM IV other than the one given".to_owned(),
                ));
            }
            if n != out.len() {
                return Err(HsmError::Invalid(format!(
                    "AES-GCM produced {n} bytes, expected {}",
                    out.len()
                )));
            }
            Ok(out)
        })
    }

    /// AES-256-GCM decryption in the HSM of `ciphertext || tag` (16-byte
    /// tag) with a 12-byte IV and `aad`. A wrong tag (or IV, AAD, key) is an
    /// error and no plaintext is returned.
    ///
    /// # Errors
    ///
    /// [`HsmError::Invalid`] for an IV that is not 12 bytes or an input
    /// shorter than the tag; [`HsmError::Call`] with a Permanent class when
    /// authentication fails.
    pub fn gcm_decrypt(
        &self,
        key: &HsmKey,
        iv: &[u8],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, HsmError> {
        let iv = gcm_iv(iv)?;
        if ciphertext_and_tag.len() < GCM_TAG_LEN {
            return Err(HsmError::Invalid(
                "AES-GCM input is shorter than its 16-byte tag".to_owned(),
            ));
        }
        self.call("C_Decrypt", |device, pooled, epoch| {
            let handle = self.key_handle(device, pooled, key, epoch)?;
            let mut out = Zeroizing::new(vec![0u8; ciphertext_and_tag.len()]);
            let n = device
                .raw
                .gcm_decrypt(
                    pooled.handle(),
                    handle,
                    iv,
                    aad,
                    ciphertext_and_tag,
                    &mut out,
                )
                .map_err(|rv| input_or_device(device, CallFailure::new("C_Decrypt", rv)))?;
            if n != ciphertext_and_tag.len() - GCM_TAG_LEN {
                return Err(HsmError::Invalid(format!(
                    "AES-GCM decryption produced {n} bytes, expected {}",
                    ciphertext_and_tag.len() - GCM_TAG_LEN
                )));
            }
            out.truncate(n);
            Ok(out)
        })
    }

    /// The object handle of `key` in the current epoch, re-found by id if
    /// sessions were reopened or the context rebuilt since it was cached.
    fn key_handle(
        &self,
        device: &Device,
        pooled: &Pooled,
        key: &HsmKey,
        epoch: u64,
    ) -> Result<CK_OBJECT_HANDLE, HsmError> {
        let token = self.token_key_handle(pooled, key, epoch)?;
        if !self.settings.session_copy {
            return Ok(token);
        }
        // Crypto runs on this session's copy (a session object: ~3x faster
        // on SoftHSM, and still sensitive and never extractable).
        let mut copies = pooled.vault_copies.lock();
        if let Some(&copy) = copies.get(&key.id) {
            return Ok(copy);
        }
        let copy = device
            .raw
            .copy_to_session(pooled.handle(), token)
            .map_err(|rv| CallFailure::new("C_CopyObject", rv))?;
        copies.insert(key.id.clone(), copy);
        Ok(copy)
    }

    /// The token object handle of `key` in the current epoch.
    fn token_key_handle(
        &self,
        pooled: &Pooled,
        key: &HsmKey,
        epoch: u64,
    ) -> Result<CK_OBJECT_HANDLE, HsmError> {
        let mut cached = key.cached.lock();
        if cached.0 == epoch {
            return Ok(cached.1);
        }
        let handle = unique(find_by_id(pooled, &key.id)?, &key.id)?.ok_or_else(|| {
            HsmError::Invalid(format!(
                "no HSM key with id {} in the token",
                hex_id(&key.id)
            ))
        })?;
        *cached = (epoch, handle);
        Ok(handle)
    }

    // -----------------------------------------------------------------
    // The pool and recovery

    /// Runs `f` on a pool session, with the recovery described in the
    /// module docs. `function` names the PKCS#11 call for injected faults.
    fn call<T>(
        &self,
        function: &'static str,
        mut f: impl FnMut(&Device, &Pooled, u64) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        self.ensure_up()?;
        self.finalize_if_injected();
        let mut retried = false;
        loop {
            let generation = self.generation.load(Ordering::Acquire);
            let result = self.call_once(function, &mut f);
            let err = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            match err.class() {
                FaultClass::Permanent | FaultClass::Retryable => return Err(err),
                FaultClass::SessionLost if !retried => {
                    retried = true;
                    bump(&self.counters.session_recoveries);
                    tracing::warn!(error = %err, "PKCS#11 session lost; reopening it and retrying");
                }
                FaultClass::SessionLost => return Err(err),
                FaultClass::DeviceFatal if !retried => {
                    retried = true;
                    if !self.recover(generation, &err) {
                        return Err(self.unavailable());
                    }
                }
                FaultClass::DeviceFatal => {
                    self.go_down(&err.to_string());
                    self.schedule_retry(err.to_string());
                    return Err(self.unavailable());
                }
            }
        }
    }

    /// One attempt: a session (reopened if it was lost), any injected
    /// fault, then `f`. A session that failed with SessionLost is closed
    /// here so the next attempt opens a new one.
    fn call_once<T>(
        &self,
        function: &'static str,
        f: &mut impl FnMut(&Device, &Pooled, u64) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        let Some(state) = self.state.try_read_for(SESSION_WAIT) else {
            return Err(HsmError::Unavailable(
                "timed out waiting for the HSM to finish recovering".to_owned(),
            ));
        };
        let Some(device) = state.device.as_ref() else {
            drop(state);
            return Err(self.unavailable());
        };
        let mut slot = self.lock_session(&state.sessions)?;
        if slot.is_none() {
            let pooled = device.open_pooled(&self.settings, &self.pin)?;
            bump(&self.counters.sessions_opened);
            self.epoch.fetch_add(1, Ordering::AcqRel);
            *slot = Some(pooled);
        }
        let pooled = slot.as_ref().expect("session just ensured");
        let outcome = match self.take_fault() {
            Some(fault) => {
                bump(&self.counters.calls);
                match apply_fault(fault, function, device, pooled) {
                    Some(err) => Err(err),
                    None => f(device, pooled, self.epoch.load(Ordering::Acquire)),
                }
            }
            None => {
                bump(&self.counters.calls);
                f(device, pooled, self.epoch.load(Ordering::Acquire))
            }
        };
        if matches!(&outcome, Err(e) if e.class() == FaultClass::SessionLost) {
            *slot = None;
        }
        outcome
    }

    /// Takes a free pool session: round robin over the sessions without
    /// waiting, then waits up to [`SESSION_WAIT`] for the first choice.
    fn lock_session<'a>(
        &self,
        sessions: &'a [Mutex<Option<Pooled>>],
    ) -> Result<MutexGuard<'a, Option<Pooled>>, HsmError> {
        let n = sessions.len();
        let start = self.next_session.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            if let Some(guard) = sessions[(start + i) % n].try_lock() {
                return Ok(guard);
            }
        }
        sessions[start].try_lock_for(SESSION_WAIT).ok_or_else(|| {
            HsmError::Unavailable(format!(
                "no PKCS#11 session became free within {SESSION_WAIT:?}"
            ))
        })
    }

    /// An injected [`InjectedFault::Finalize`] runs here, under the state
    /// write lock: PKCS#11 leaves `C_Finalize` concurrent with other calls
    /// undefined (SoftHSM deadlocks or crashes), so, like a rebuild, it waits
    /// for in-flight calls to leave the module first.
    fn finalize_if_injected(&self) {
        if !self.faults.armed.load(Ordering::Relaxed) {
            return;
        }
        let Some(state) = self.state.try_write_for(REBUILD_WAIT) else {
            return;
        };
        let mut queue = self.faults.queue.lock();
        if queue.front() != Some(&InjectedFault::Finalize) {
            return;
        }
        queue.pop_front();
        if queue.is_empty() {
            self.faults.armed.store(false, Ordering::Release);
        }
        if let Some(device) = state.device.as_ref() {
            tracing::debug!("injecting a PKCS#11 fault: C_Finalize");
            let _ = device.raw.finalize();
        }
    }

    fn take_fault(&self) -> Option<InjectedFault> {
        if !self.faults.armed.load(Ordering::Relaxed) {
            return None;
        }
        let mut queue = self.faults.queue.lock();
        if queue.front() == Some(&InjectedFault::Finalize) {
            // Left for `finalize_if_injected` at the start of the next call.
            return None;
        }
        let fault = queue.pop_front();
        if queue.is_empty() {
            self.faults.armed.store(false, Ordering::Release);
        }
        fault
    }

    /// Fails fast while the HSM is down and the backoff has not expired;
    /// after it expires, the calling thread tries the rebuild.
    fn ensure_up(&self) -> Result<(), HsmError> {
        if self.is_available() {
            return Ok(());
        }
        {
            let mut health = self.health.lock();
            if self.is_available() {
                return Ok(());
            }
            if health.rebuilding || Instant::now() < health.retry_at {
                bump(&self.counters.fast_failures);
                drop(health);
                return Err(self.unavailable());
            }
            health.rebuilding = true;
        }
        if self.rebuild(None) {
            Ok(())
        } else {
            Err(self.unavailable())
        }
    }

    /// After a device-fatal error seen at `seen_generation`: rebuild now,
    /// unless someone else already did (then just retry) or is doing it or
    /// the backoff has not expired (then fail).
    fn recover(&self, seen_generation: u64, cause: &HsmError) -> bool {
        {
            let mut health = self.health.lock();
            if self.generation.load(Ordering::Acquire) != seen_generation {
                return true;
            }
            if health.rebuilding || (health.since.is_some() && Instant::now() < health.retry_at) {
                return false;
            }
            health.rebuilding = true;
        }
        self.rebuild(Some(cause.to_string()))
    }

    /// Marks the HSM down (logging the transition once).
    fn go_down(&self, cause: &str) {
        let mut health = self.health.lock();
        if health.since.is_none() {
            health.since = Some(Instant::now());
            health.backoff = BACKOFF_START;
            self.down.store(true, Ordering::Release);
            tracing::error!(
                cause,
                token = %self.settings.token_label,
                "HSM down: calls that need it fail with Unavailable until it recovers \
                 (retrying with backoff)"
            );
        }
    }

    /// Schedules the next rebuild attempt after the current backoff, and
    /// doubles the backoff.
    fn schedule_retry(&self, reason: String) {
        let mut health = self.health.lock();
        health.retry_at = Instant::now() + health.backoff;
        health.backoff = (health.backoff * 2).min(BACKOFF_MAX);
        health.last_error = reason;
    }

    /// Rebuilds the whole context. The caller has set `health.rebuilding`.
    fn rebuild(&self, cause: Option<String>) -> bool {
        self.go_down(cause.as_deref().unwrap_or("device failure"));
        let outcome = match self.state.try_write_for(REBUILD_WAIT) {
            None => Err("in-flight PKCS#11 calls did not finish".to_owned()),
            Some(mut state) => {
                // Sessions first (closing them on a dead module fails
                // quietly), then the module: a C_Initialize after this may
                // reuse session handle numbers, so no old session may
                // survive it.
                for slot in state.sessions.iter() {
                    *slot.lock() = None;
                }
                if let Some(old) = state.device.take() {
                    let _ = old.ctx.finalize();
                }
                match connect(&self.settings, &self.pin) {
                    Ok((device, sessions)) => {
                        let n = sessions.len() as u64;
                        for (slot, pooled) in state.sessions.iter().zip(sessions) {
                            *slot.lock() = Some(pooled);
                        }
                        state.device = Some(device);
                        self.counters
                            .sessions_opened
                            .fetch_add(n, Ordering::Relaxed);
                        self.epoch.fetch_add(n, Ordering::AcqRel);
                        self.generation.fetch_add(1, Ordering::AcqRel);
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        let mut health = self.health.lock();
        health.rebuilding = false;
        match outcome {
            Ok(()) => {
                bump(&self.counters.rebuilds);
                let down_for = health.since.take().map(|t| t.elapsed()).unwrap_or_default();
                health.backoff = BACKOFF_START;
                health.last_error.clear();
                self.down.store(false, Ordering::Release);
                tracing::info!(
                    token = %self.settings.token_label,
                    ?down_for,
                    "HSM recovered: PKCS#11 context rebuilt"
                );
                true
            }
            Err(reason) => {
                bump(&self.counters.failed_rebuilds);
                tracing::debug!(%reason, backoff = ?health.backoff, "HSM rebuild failed");
                health.retry_at = Instant::now() + health.backoff;
                health.backoff = (health.backoff * 2).min(BACKOFF_MAX);
                health.last_error = reason;
                false
            }
        }
    }

    fn unavailable(&self) -> HsmError {
        let health = self.health.lock();
        let wait = health.retry_at.saturating_duration_since(Instant::now());
        HsmError::Unavailable(if health.last_error.is_empty() {
            "the HSM is down".to_owned()
        } else {
            format!(
                "the HSM is down ({}); next attempt in {wait:?}",
                health.last_error
            )
        })
    }
}

impl Drop for Hsm {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        for slot in state.sessions.iter() {
            *slot.lock() = None;
        }
        if let Some(device) = state.device.take() {
            device.close();
        }
    }
}

/// Opens the device and all pool sessions; on failure nothing stays open.
fn connect(settings: &Settings, pin: &Pin) -> Result<(Device, Vec<Pooled>), HsmError> {
    let device = Device::open(settings)?;
    let mut sessions = Vec::with_capacity(settings.pool_size);
    for _ in 0..settings.pool_size {
        match device.open_pooled(settings, pin) {
            Ok(pooled) => sessions.push(pooled),
            Err(e) => {
                drop(sessions);
                device.close();
                return Err(e);
            }
        }
    }
    Ok((device, sessions))
}

/// Start-up errors are all [`SetupError`]s with a one-line message.
fn setup_error(err: HsmError) -> HsmError {
    match err {
        HsmError::Call(failure) => HsmError::Setup(SetupError::Call {
            what: "opening the PKCS#11 token".to_owned(),
            failure,
        }),
        other => other,
    }
}

/// Re-checks an ambiguous failure of an input-checking call (see the module
/// docs): Permanent if the token still answers, else the probe's failure.
fn input_or_device(device: &Device, failure: CallFailure) -> HsmError {
    if !matches!(failure.rv, CKR_GENERAL_ERROR | CKR_FUNCTION_FAILED) {
        return failure.into();
    }
    match device.ctx.get_token_info(device.slot) {
        Ok(_) => CallFailure {
            class: FaultClass::Permanent,
            ..failure
        }
        .into(),
        Err(e) => {
            let probe = CallFailure::from_cryptoki("C_GetTokenInfo", &e);
            if probe.class == FaultClass::Permanent {
                // The token answered with something odd; the device is
                // there, so the input was the problem.
                CallFailure {
                    class: FaultClass::Permanent,
                    ..failure
                }
                .into()
            } else {
                CallFailure {
                    class: FaultClass::DeviceFatal,
                    ..probe
                }
                .into()
            }
        }
    }
}

fn apply_fault(
    fault: InjectedFault,
    function: &'static str,
    device: &Device,
    pooled: &Pooled,
) -> Option<HsmError> {
    tracing::debug!(?fault, function, "injecting a PKCS#11 fault");
    match fault {
        InjectedFault::ReturnCode(rv) => Some(CallFailure::new(function, rv).into()),
        InjectedFault::CloseSession => {
            let _ = device.raw.close_session(pooled.handle());
            None
        }
        InjectedFault::DestroyRootCopy => {
            if pooled.copied {
                let _ = device.raw.destroy(pooled.handle(), pooled.root);
            }
            None
        }
        // Applied exclusively by `finalize_if_injected`, never here.
        InjectedFault::Finalize => None,
        // Never queued (`inject_fault`).
        InjectedFault::ForeignGcmIv => None,
    }
}

fn gcm_iv(iv: &[u8]) -> Result<&[u8; GCM_IV_LEN], HsmError> {
    iv.try_into().map_err(|_| {
        HsmError::Invalid(format!(
            "AES-GCM IV must be exactly {GCM_IV_LEN} bytes, not {}",
            iv.len()
        ))
    })
}

fn find_by_id(pooled: &Pooled, id: &[u8]) -> Result<Vec<CK_OBJECT_HANDLE>, HsmError> {
    let found = pooled
        .session()
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Id(id.to_vec()),
        ])
        .map_err(|e| CallFailure::from_cryptoki("C_FindObjects", &e))?;
    Ok(found.iter().map(|h| h.handle()).collect())
}

fn unique(found: Vec<CK_OBJECT_HANDLE>, id: &[u8]) -> Result<Option<CK_OBJECT_HANDLE>, HsmError> {
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found[0])),
        n => Err(HsmError::Invalid(format!(
            "{n} HSM keys have id {}",
            hex_id(id)
        ))),
    }
}

/// What `kmsd hsm init` created.
#[derive(Clone, Debug)]
pub struct InitReport {
    /// Token label.
    pub token_label: String,
    /// Slot id.
    pub slot_id: u64,
    /// Key label.
    pub key_label: String,
}

/// Creates the root key in the token (`kmsd hsm init`): AES-256,
/// `CKA_TOKEN`, `CKA_SENSITIVE`, never extractable, wrap/unwrap only,
/// labelled `key_label`.
///
/// # Errors
///
/// [`SetupError::RootKeyExists`] if an object with that label exists, and
/// the start-up errors of [`Hsm::open`].
pub fn init_root_key(config: &Pkcs11Config) -> Result<InitReport, SetupError> {
    let settings = Settings::from_config(config)?;
    let pin = Pin::from_config(config)?;
    let device = Device::open(&settings)?;
    let result = (|| {
        let session = device
            .open_session(&pin, &settings.token_label)
            .map_err(|e| match e {
                HsmError::Setup(s) => s,
                other => SetupError::Config(other.to_string()),
            })?;
        let created = (|| {
            let existing = session
                .find_objects(&[
                    Attribute::Token(true),
                    Attribute::Label(settings.key_label.as_bytes().to_vec()),
                ])
                .map_err(|e| SetupError::Call {
                    what: "looking for an existing root key".to_owned(),
                    failure: CallFailure::from_cryptoki("C_FindObjects", &e),
                })?;
            if !existing.is_empty() {
                return Err(SetupError::RootKeyExists {
                    key_label: settings.key_label.clone(),
                    token_label: settings.token_label.clone(),
                });
            }
            session
                .generate_key(
                    &device::AES_KEY_GEN,
                    &device::root_key_template(&settings.key_label),
                )
                .map_err(|e| SetupError::Call {
                    what: "generating the root key".to_owned(),
                    failure: CallFailure::from_cryptoki("C_GenerateKey", &e),
                })?;
            Ok(InitReport {
                token_label: settings.token_label.clone(),
                slot_id: device.slot.id(),
                key_label: settings.key_label.clone(),
            })
        })();
        close_session(session);
        created
    })();
    device.close();
    result
}
