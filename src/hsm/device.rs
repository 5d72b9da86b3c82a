//! Opening a PKCS#11 device: load the module, `C_Initialize` with
//! `OS_LOCKING_OK`, find the token by label, open sessions, log in, find the
//! root key. Used at start-up, when the pool rebuilds the context after a
//! device failure, and by `kmsd hsm init` / `kmsd hsm check`.

use std::path::PathBuf;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki_sys::{
    CKR_CRYPTOKI_ALREADY_INITIALIZED, CKR_PIN_EXPIRED, CKR_PIN_INCORRECT, CKR_PIN_INVALID,
    CKR_PIN_LEN_RANGE, CKR_PIN_LOCKED, CKR_USER_ALREADY_LOGGED_IN, CKR_USER_PIN_NOT_INITIALIZED,
    CK_MECHANISM_TYPE, CK_OBJECT_HANDLE,
};

use super::error::{rv_name, rv_of, CallFailure, HsmError, SetupError};
use super::ffi::RawApi;
use super::pin::Pin;
use crate::config::Pkcs11Config;

/// The PKCS#11 settings, checked and converted once.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub module: PathBuf,
    pub token_label: String,
    pub key_label: String,
    pub pool_size: usize,
    pub kwp_mechanism: CK_MECHANISM_TYPE,
    /// The same number as configured, for reports.
    pub configured_mechanism: u64,
    pub session_copy: bool,
    pub private_unwrapped: bool,
}

impl Settings {
    pub(crate) fn from_config(config: &Pkcs11Config) -> Result<Settings, SetupError> {
        if config.token_label.is_empty() || config.key_label.is_empty() {
            return Err(SetupError::Config(
                "root.pkcs11.token_label and key_label must not be empty".to_owned(),
            ));
        }
        if !(1..=64).contains(&config.pool_size) {
            return Err(SetupError::Config(
                "root.pkcs11.pool_size must be 1..=64".to_owned(),
            ));
        }
        let kwp_mechanism = CK_MECHANISM_TYPE::try_from(config.kwp_mechanism).map_err(|_| {
            SetupError::Config("root.pkcs11.kwp_mechanism does not fit a CK_ULONG".to_owned())
        })?;
        Ok(Settings {
            module: config.module.clone(),
            token_label: config.token_label.clone(),
            key_label: config.key_label.clone(),
            pool_size: config.pool_size,
            kwp_mechanism,
            configured_mechanism: config.kwp_mechanism,
            session_copy: config.session_copy,
            private_unwrapped: config.private_unwrapped,
        })
    }
}

/// A loaded, initialised module and the slot of our token.
pub(crate) struct Device {
    pub ctx: Pkcs11,
    pub raw: RawApi,
    pub slot: Slot,
    /// Whether our `C_Initialize` succeeded (rather than finding the module
    /// already initialised by someone else in this process).
    pub owns_init: bool,
    /// "SoftHSM 2.6" style description of the library.
    pub library: String,
    /// Token model and serial number, for `kmsd hsm check`.
    pub token_model: String,
    pub token_serial: String,
}

fn call_err(what: &str, function: &'static str, err: &cryptoki::error::Error) -> SetupError {
    SetupError::Call {
        what: what.to_owned(),
        failure: CallFailure::from_cryptoki(function, err),
    }
}

impl Device {
    /// Loads and initialises the module and finds the token. On failure the
    /// module is left finalised if we initialised it.
    pub(crate) fn open(settings: &Settings) -> Result<Device, SetupError> {
        // Every way into the module that is not a pool call (start-up, `kmsd
        // hsm init`, a rebuild) starts here.
        crate::thread_role::assert_may_block("a PKCS#11 call");
        if !settings.module.exists() {
            return Err(SetupError::ModuleNotFound {
                path: settings.module.clone(),
            });
        }
        let load_err = |detail: String| SetupError::ModuleLoad {
            path: settings.module.clone(),
            detail,
        };
        let ctx = Pkcs11::new(&settings.module).map_err(|e| load_err(e.to_string()))?;
        // OS_LOCKING_OK: SoftHSM (and most modules) use no locks at all
        // unless told that the application is multi-threaded.
        let owns_init = match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        {
            Ok(()) => true,
            Err(e) if rv_of(&e) == Some(CKR_CRYPTOKI_ALREADY_INITIALIZED) => false,
            Err(e) => return Err(load_err(format!("C_Initialize: {e}"))),
        };
        let finish = || -> Result<Device, SetupError> {
            let raw = RawApi::load(&settings.module).map_err(load_err)?;
            let library = match ctx.get_library_info() {
                Ok(info) => format!(
                    "{} {}.{} ({})",
                    info.library_description(),
                    info.library_version().major(),
                    info.library_version().minor(),
                    info.manufacturer_id()
                ),
                Err(e) => return Err(call_err("reading the module's info", "C_GetInfo", &e)),
            };
            let (slot, token_model, token_serial) = find_slot(&ctx, settings)?;
            Ok(Device {
                ctx: ctx.clone(),
                raw,
                slot,
                owns_init,
                library,
                token_model,
                token_serial,
            })
        };
        finish().inspect_err(|_| {
            if owns_init {
                let _ = ctx.clone().finalize();
            }
        })
    }

    /// Finalises the module if we initialised it. Sessions must be closed
    /// first.
    pub(crate) fn close(self) {
        if self.owns_init {
            let _ = self.ctx.finalize();
        }
    }

    /// Opens a read-write session and makes sure the user is logged in
    /// (login is per application and token: the first session logs in, the
    /// others find it done).
    pub(crate) fn open_session(&self, pin: &Pin, token_label: &str) -> Result<Session, HsmError> {
        // No close on drop: sessions are closed explicitly (see
        // `close_session`), so that closing one that the device already lost
        // is silent rather than logged as an error by cryptoki.
        let session = self
            .ctx
            .open_rw_session_no_drop(self.slot)
            .map_err(|e| CallFailure::from_cryptoki("C_OpenSession", &e))?;
        let logged_in = session
            .get_session_info()
            .map(|info| matches!(info.session_state(), SessionState::RwUser))
            .unwrap_or(false);
        if !logged_in {
            if let Err(e) = session.login(UserType::User, Some(pin.auth())) {
                match rv_of(&e) {
                    Some(CKR_USER_ALREADY_LOGGED_IN) => {}
                    Some(
                        rv @ (CKR_PIN_INCORRECT
                        | CKR_PIN_INVALID
                        | CKR_PIN_LEN_RANGE
                        | CKR_PIN_LOCKED
                        | CKR_PIN_EXPIRED
                        | CKR_USER_PIN_NOT_INITIALIZED),
                    ) => {
                        close_session(session);
                        return Err(SetupError::PinRejected {
                            label: token_label.to_owned(),
                            reason: rv_name(rv),
                        }
                        .into());
                    }
                    _ => {
                        close_session(session);
                        return Err(CallFailure::from_cryptoki("C_Login", &e).into());
                    }
                }
            }
        }
        Ok(session)
    }

    /// Finds the token's root key: the one AES secret key token object with
    /// the configured label (session copies have the same label, hence
    /// `CKA_TOKEN = true` in the search).
    pub(crate) fn find_root(
        &self,
        session: &Session,
        settings: &Settings,
    ) -> Result<ObjectHandle, HsmError> {
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Label(settings.key_label.as_bytes().to_vec()),
            ])
            .map_err(|e| CallFailure::from_cryptoki("C_FindObjects", &e))?;
        match found.len() {
            1 => Ok(found[0]),
            0 => Err(SetupError::RootKeyMissing {
                key_label: settings.key_label.clone(),
                token_label: settings.token_label.clone(),
            }
            .into()),
            count => Err(SetupError::RootKeyAmbiguous {
                key_label: settings.key_label.clone(),
                token_label: settings.token_label.clone(),
                count,
            }
            .into()),
        }
    }

    /// Opens one pool session: login, root key, and (with `session_copy`)
    /// the session copy of the root key.
    pub(crate) fn open_pooled(&self, settings: &Settings, pin: &Pin) -> Result<Pooled, HsmError> {
        let session = self.open_session(pin, &settings.token_label)?;
        let prepared = (|| {
            let token_root = self.find_root(&session, settings)?;
            if !settings.session_copy {
                return Ok((token_root.handle(), false));
            }
            // A session object copy: same key, still sensitive and never
            // extractable (C_CopyObject cannot relax those), but served from
            // memory instead of SoftHSM's file-backed token object.
            let copy = session
                .copy_object(token_root, &[Attribute::Token(false)])
                .map_err(|e| CallFailure::from_cryptoki("C_CopyObject", &e))?;
            Ok((copy.handle(), true))
        })();
        match prepared {
            Ok((root, copied)) => Ok(Pooled {
                session: Some(session),
                root,
                copied,
                hsm_only_copies: parking_lot::Mutex::new(std::collections::HashMap::new()),
            }),
            Err(e) => {
                close_session(session);
                Err(e)
            }
        }
    }

    /// Attributes of the token's root key that `kmsd hsm check` reports.
    pub(crate) fn root_attributes(
        &self,
        session: &Session,
        root: ObjectHandle,
    ) -> Result<Vec<(String, bool)>, HsmError> {
        let wanted = [
            AttributeType::Sensitive,
            AttributeType::Extractable,
            AttributeType::Wrap,
            AttributeType::Unwrap,
            AttributeType::Encrypt,
            AttributeType::Decrypt,
        ];
        let attrs = session
            .get_attributes(root, &wanted)
            .map_err(|e| CallFailure::from_cryptoki("C_GetAttributeValue", &e))?;
        // get_attributes silently drops attributes the token refuses; report
        // what came back, by name.
        Ok(attrs
            .iter()
            .filter_map(|a| match a {
                Attribute::Sensitive(v) => Some(("CKA_SENSITIVE", *v)),
                Attribute::Extractable(v) => Some(("CKA_EXTRACTABLE", *v)),
                Attribute::Wrap(v) => Some(("CKA_WRAP", *v)),
                Attribute::Unwrap(v) => Some(("CKA_UNWRAP", *v)),
                Attribute::Encrypt(v) => Some(("CKA_ENCRYPT", *v)),
                Attribute::Decrypt(v) => Some(("CKA_DECRYPT", *v)),
                _ => None,
            })
            .map(|(n, v)| (n.to_owned(), v))
            .collect())
    }
}

/// Closes a session, ignoring failures (it may already be gone with the
/// device).
pub(crate) fn close_session(session: Session) {
    let _ = session.close();
}

/// One pool session and the root key handle it uses.
pub(crate) struct Pooled {
    /// Always `Some` until dropped.
    pub session: Option<Session>,
    /// The session copy of the root key, or its token object itself.
    pub root: CK_OBJECT_HANDLE,
    /// Whether `root` is a session copy. Read only by the fault hook
    /// (`InjectedFault::DestroyRootCopy` destroys copies, never the token
    /// key).
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub copied: bool,
    /// Session copies of HSM-only keys used on this session, by CKA_ID
    /// (with `session_copy`: a session object runs AES-GCM ~3x faster than
    /// a token object on SoftHSM). They go away with the session.
    pub hsm_only_copies: parking_lot::Mutex<std::collections::HashMap<Vec<u8>, CK_OBJECT_HANDLE>>,
}

impl Pooled {
    pub(crate) fn session(&self) -> &Session {
        self.session.as_ref().expect("pooled session present")
    }

    pub(crate) fn handle(&self) -> cryptoki_sys::CK_SESSION_HANDLE {
        self.session().handle()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // Closing the session destroys its session objects (the root copy).
        if let Some(session) = self.session.take() {
            close_session(session);
        }
    }
}

/// Finds the one slot whose token has the configured label. The slot list is
/// queried fresh every time (after C_InitToken SoftHSM moves a token to a
/// new slot id).
fn find_slot(ctx: &Pkcs11, settings: &Settings) -> Result<(Slot, String, String), SetupError> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| call_err("listing slots", "C_GetSlotList", &e))?;
    let mut found = Vec::new();
    let mut matches = Vec::new();
    for slot in slots {
        // A slot whose token cannot be read (e.g. its files vanished) is
        // skipped, not fatal: another may hold our token.
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if !info.token_initialized() {
            continue;
        }
        let label = info.label().trim_end().to_owned();
        if label == settings.token_label {
            matches.push((
                slot,
                info.model().trim_end().to_owned(),
                info.serial_number().trim_end().to_owned(),
            ));
        }
        found.push(label);
    }
    match matches.len() {
        1 => Ok(matches.remove(0)),
        0 => Err(SetupError::TokenNotFound {
            label: settings.token_label.clone(),
            module: settings.module.clone(),
            found,
        }),
        count => Err(SetupError::TokenAmbiguous {
            label: settings.token_label.clone(),
            count,
        }),
    }
}

/// The template of the root key `kmsd hsm init` creates: AES-256 in the
/// token, sensitive, never extractable, for wrapping and unwrapping only.
pub(crate) fn root_key_template(label: &str) -> Vec<Attribute> {
    token_aes_key(label, Usage::Wrap)
}

/// The template of an HSM-only key: AES-256 in the token, sensitive,
/// never extractable, for AES-GCM encrypt and decrypt only.
pub(crate) fn hsm_only_key_template(label: &str, id: &[u8]) -> Vec<Attribute> {
    let mut t = token_aes_key(label, Usage::Encrypt);
    t.push(Attribute::Id(id.to_vec()));
    t
}

/// What a token object kmsd creates may do: exactly one of the two.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Usage {
    Wrap,
    Encrypt,
}

/// An AES-256 token object that is sensitive, never extractable, and usable
/// only as `usage` says.
fn token_aes_key(label: &str, usage: Usage) -> Vec<Attribute> {
    let wrap = usage == Usage::Wrap;
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Wrap(wrap),
        Attribute::Unwrap(wrap),
        Attribute::Encrypt(!wrap),
        Attribute::Decrypt(!wrap),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
    ]
}

/// AES key generation.
pub(crate) const AES_KEY_GEN: Mechanism<'static> = Mechanism::AesKeyGen;
