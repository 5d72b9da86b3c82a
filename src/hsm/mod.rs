//! The PKCS#11 layer: a pool of sessions on one token, with fault
//! classification and recovery, over the `cryptoki` crate.
//!
//! Layout, one concern per file:
//!
//! - this module: [`Hsm`] (opening it, its health and counters, `kmsd hsm
//!   check`'s [`HsmInfo`]) and the re-exports every other module uses.
//! - `pool`: the sessions and [`Hsm`]'s one entry point for a PKCS#11 call
//!   (`Hsm::call`): take a session, run the call, retry it once after a
//!   lost session or a rebuilt context.
//! - `health`: up and down: the rebuild of the whole context after a
//!   device failure, the backoff while down, the check of ambiguous
//!   failures, and [`HsmStats`].
//! - `root_key`: wrap and unwrap backing keys under the root key (RFC 5649
//!   KWP, the same bytes as [`crate::root::FileRoot`]).
//! - `hsm_only_keys`: HSM-only keys ([`HsmOnlyKey`]): generated in the token,
//!   AES-256-GCM inside it, destroyed there.
//! - `import_keys`: the RSA wrapping key pairs of imports of key material:
//!   generated in the token, RSA-OAEP (SHA-256) decryption inside it
//!   ([`OaepPath`]), destroyed there.
//! - `fault` (feature `fault-injection`): `InjectedFault`, the test hook
//!   for the recovery paths.
//! - `init`: [`init_root_key`] (`kmsd hsm init`).
//! - `ffi`: the few raw PKCS#11 calls cryptoki cannot make for us (one-call
//!   wrap and attribute read, arbitrary mechanism numbers, zeroized key
//!   buffers). The only `unsafe` code in kmsd's HSM support; its module docs
//!   say why each call is there and why it is sound.
//! - `device`: loading the module, `C_Initialize(OS_LOCKING_OK)`, finding the
//!   token by label, sessions, login, the root key.
//! - [`error`]: [`HsmError`], [`SetupError`] (one-line start-up messages that
//!   say what to do) and [`classify`]: CKR_* codes to [`FaultClass`].
//! - [`pin`]: [`Pin`], from a 0600 file or an environment variable.
//!
//! **Threads.** Every call blocks in the PKCS#11 module (tens of
//! microseconds on SoftHSM, milliseconds on a network HSM). Callers are
//! worker or loader threads, never I/O threads (ARCHITECTURE.md, "Threads").
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
#[cfg(feature = "fault-injection")]
mod fault;
mod ffi;
mod health;
mod hsm_only_keys;
mod import_keys;
mod init;
pub mod pin;
mod pool;
mod root_key;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::config::Pkcs11Config;
use device::Settings;
pub use error::{classify, rv_name, CallFailure, FaultClass, HsmError, SetupError};
#[cfg(feature = "fault-injection")]
pub use fault::InjectedFault;
use health::{Counters, Health};
pub use health::{HsmStats, BACKOFF_MAX, BACKOFF_START};
pub use hsm_only_keys::{HsmOnlyKey, GCM_IV_LEN, GCM_TAG_LEN};
pub use import_keys::{OaepPath, IMPORT_KEY_LABEL_PREFIX};
pub use init::{init_root_key, InitReport};
pub use pin::Pin;
use pool::State;
pub use pool::SESSION_WAIT;

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
    /// HSM-only keys are re-found when it changes.
    epoch: AtomicU64,
    next_session: AtomicUsize,
    /// How the token decrypts RSA-OAEP with SHA-256, once known
    /// (`import_keys`: 0 unknown, 1 the mechanism, 2 raw RSA).
    oaep_path: AtomicU8,
    #[cfg(feature = "fault-injection")]
    faults: fault::Faults,
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
        let (device, sessions) = pool::connect(&settings, &pin).map_err(setup_error)?;
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
            oaep_path: AtomicU8::new(0),
            #[cfg(feature = "fault-injection")]
            faults: fault::Faults::default(),
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
        self.counters.snapshot()
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
