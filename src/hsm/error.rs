//! HSM errors and the classification of PKCS#11 return values that drives
//! recovery.

use std::fmt;
use std::path::PathBuf;

use cryptoki::error::{Rv, RvError};
use cryptoki_sys::*;

/// What a failed PKCS#11 call means for the pool, and so what it does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultClass {
    /// The device is busy or short of resources; the same call may work
    /// later. Not retried inline: the caller sees [`HsmError::is_transient`]
    /// and the client retries with backoff.
    Retryable,
    /// This session (or an object that lives in it, such as the session copy
    /// of the root key) is gone; the device is fine. The session is reopened
    /// (logging in again, re-finding and re-copying the root key) and the
    /// call retried once.
    SessionLost,
    /// The module or the token is broken, gone or uninitialised. The whole
    /// PKCS#11 context is rebuilt (finalize, initialize, slot, login, key,
    /// sessions); until that works, calls fail fast.
    DeviceFatal,
    /// The request itself is wrong (corrupt wrapped key, bad tag, bad
    /// template): retrying cannot help.
    Permanent,
}

/// Classifies a PKCS#11 return value.
///
/// Choices worth stating:
/// - `CKR_FUNCTION_FAILED` is Retryable: PKCS#11 defines it as "could not be
///   performed, no detail available", a transient device condition rather
///   than a statement about the input. The input-checking calls (unwrap, GCM
///   decrypt) re-check it, see [`crate::hsm`] ("ambiguous failures").
/// - `CKR_GENERAL_ERROR` is DeviceFatal per PKCS#11 ("unrecoverable"), **but
///   SoftHSM 2.6.1 returns it for a wrapped key that fails its integrity
///   check and for a GCM tag mismatch**. Taking the device down for a
///   corrupt blob would let one bad ciphertext cause an outage, so those two
///   calls probe the token before believing it.
/// - The `*_HANDLE_INVALID` codes for keys are SessionLost: SoftHSM reports
///   a logged-out session's private objects (the session copy of the root
///   key included) this way, and after a token comes back its objects have
///   new handles. Reopening re-finds them.
/// - `CKR_OPERATION_ACTIVE` is SessionLost: a session left mid-operation is
///   cured by a new session.
pub fn classify(rv: CK_RV) -> FaultClass {
    match rv {
        CKR_FUNCTION_FAILED
        | CKR_DEVICE_MEMORY
        | CKR_SESSION_COUNT
        | CKR_HOST_MEMORY
        | CKR_FUNCTION_CANCELED
        | CKR_CANT_LOCK
        | CKR_SESSION_EXISTS => FaultClass::Retryable,
        CKR_SESSION_HANDLE_INVALID
        | CKR_SESSION_CLOSED
        | CKR_USER_NOT_LOGGED_IN
        | CKR_OBJECT_HANDLE_INVALID
        | CKR_KEY_HANDLE_INVALID
        | CKR_WRAPPING_KEY_HANDLE_INVALID
        | CKR_UNWRAPPING_KEY_HANDLE_INVALID
        | CKR_OPERATION_ACTIVE
        | CKR_OPERATION_NOT_INITIALIZED => FaultClass::SessionLost,
        CKR_DEVICE_ERROR
        | CKR_DEVICE_REMOVED
        | CKR_TOKEN_NOT_PRESENT
        | CKR_TOKEN_NOT_RECOGNIZED
        | CKR_CRYPTOKI_NOT_INITIALIZED
        | CKR_GENERAL_ERROR
        | CKR_SLOT_ID_INVALID => FaultClass::DeviceFatal,
        _ => FaultClass::Permanent,
    }
}

/// The PKCS#11 name of a return value, e.g. `CKR_WRAPPED_KEY_INVALID`.
pub fn rv_name(rv: CK_RV) -> String {
    if rv == CKR_OK {
        return "CKR_OK".to_owned();
    }
    if rv >= CKR_VENDOR_DEFINED {
        return format!("CKR_VENDOR_DEFINED+{:#x}", rv - CKR_VENDOR_DEFINED);
    }
    KNOWN_CODES
        .iter()
        .find(|(code, _)| *code == rv)
        .map_or_else(|| format!("CKR_{rv:#x}"), |(_, name)| (*name).to_owned())
}

/// The numeric value of a cryptoki error, when it is a PKCS#11 return value.
pub(crate) fn rv_of(err: &cryptoki::error::Error) -> Option<CK_RV> {
    match err {
        cryptoki::error::Error::Pkcs11(e, _) => Some(rv_error_code(*e)),
        _ => None,
    }
}

/// Maps cryptoki's `RvError` back to its number (cryptoki has the mapping
/// only in the other direction).
fn rv_error_code(e: RvError) -> CK_RV {
    // Every code from 0 to 0x1B0 plus the vendor range is covered by
    // searching the codes cryptoki knows; unknown ones carry their number.
    match e {
        RvError::VendorDefined(code) | RvError::UnknownErrorCode(code) => code,
        other => KNOWN_CODES
            .iter()
            .map(|(code, _)| *code)
            .find(|&code| Rv::from(code) == Rv::Error(other))
            .unwrap_or(CKR_GENERAL_ERROR),
    }
}

/// The return values this crate distinguishes or is likely to see; used to
/// recover the number behind a cryptoki `RvError`.
macro_rules! named {
    ($($code:ident),* $(,)?) => {
        &[$(($code, stringify!($code))),*]
    };
}

const KNOWN_CODES: &[(CK_RV, &str)] = named![
    CKR_CANCEL,
    CKR_HOST_MEMORY,
    CKR_SLOT_ID_INVALID,
    CKR_GENERAL_ERROR,
    CKR_FUNCTION_FAILED,
    CKR_ARGUMENTS_BAD,
    CKR_CANT_LOCK,
    CKR_ATTRIBUTE_READ_ONLY,
    CKR_ATTRIBUTE_SENSITIVE,
    CKR_ATTRIBUTE_TYPE_INVALID,
    CKR_ATTRIBUTE_VALUE_INVALID,
    CKR_ACTION_PROHIBITED,
    CKR_DATA_INVALID,
    CKR_DATA_LEN_RANGE,
    CKR_DEVICE_ERROR,
    CKR_DEVICE_MEMORY,
    CKR_DEVICE_REMOVED,
    CKR_ENCRYPTED_DATA_INVALID,
    CKR_ENCRYPTED_DATA_LEN_RANGE,
    CKR_FUNCTION_CANCELED,
    CKR_FUNCTION_NOT_SUPPORTED,
    CKR_KEY_HANDLE_INVALID,
    CKR_KEY_SIZE_RANGE,
    CKR_KEY_TYPE_INCONSISTENT,
    CKR_KEY_FUNCTION_NOT_PERMITTED,
    CKR_KEY_NOT_WRAPPABLE,
    CKR_KEY_UNEXTRACTABLE,
    CKR_MECHANISM_INVALID,
    CKR_MECHANISM_PARAM_INVALID,
    CKR_OBJECT_HANDLE_INVALID,
    CKR_OPERATION_ACTIVE,
    CKR_OPERATION_NOT_INITIALIZED,
    CKR_PIN_INCORRECT,
    CKR_PIN_INVALID,
    CKR_PIN_LEN_RANGE,
    CKR_PIN_EXPIRED,
    CKR_PIN_LOCKED,
    CKR_SESSION_CLOSED,
    CKR_SESSION_COUNT,
    CKR_SESSION_HANDLE_INVALID,
    CKR_SESSION_PARALLEL_NOT_SUPPORTED,
    CKR_SESSION_READ_ONLY,
    CKR_SESSION_EXISTS,
    CKR_TEMPLATE_INCOMPLETE,
    CKR_TEMPLATE_INCONSISTENT,
    CKR_TOKEN_NOT_PRESENT,
    CKR_TOKEN_NOT_RECOGNIZED,
    CKR_TOKEN_WRITE_PROTECTED,
    CKR_UNWRAPPING_KEY_HANDLE_INVALID,
    CKR_UNWRAPPING_KEY_SIZE_RANGE,
    CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
    CKR_USER_ALREADY_LOGGED_IN,
    CKR_USER_NOT_LOGGED_IN,
    CKR_USER_PIN_NOT_INITIALIZED,
    CKR_USER_TYPE_INVALID,
    CKR_WRAPPED_KEY_INVALID,
    CKR_WRAPPED_KEY_LEN_RANGE,
    CKR_WRAPPING_KEY_HANDLE_INVALID,
    CKR_WRAPPING_KEY_SIZE_RANGE,
    CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
    CKR_BUFFER_TOO_SMALL,
    CKR_CRYPTOKI_NOT_INITIALIZED,
    CKR_CRYPTOKI_ALREADY_INITIALIZED,
];

/// One failed PKCS#11 call: which function, what it returned, and how that
/// return value is classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallFailure {
    /// The PKCS#11 function, e.g. `"C_UnwrapKey"`.
    pub function: &'static str,
    /// Its return value.
    pub rv: CK_RV,
    /// What it means for recovery.
    pub class: FaultClass,
}

impl CallFailure {
    /// A failure classified by [`classify`].
    pub fn new(function: &'static str, rv: CK_RV) -> CallFailure {
        CallFailure {
            function,
            rv,
            class: classify(rv),
        }
    }

    /// A failure of a cryptoki call; errors that are not PKCS#11 return
    /// values (conversion failures) are Permanent.
    pub(crate) fn from_cryptoki(function: &'static str, err: &cryptoki::error::Error) -> Self {
        match rv_of(err) {
            Some(rv) => CallFailure::new(function, rv),
            None => CallFailure {
                function,
                rv: CKR_ARGUMENTS_BAD,
                class: FaultClass::Permanent,
            },
        }
    }
}

impl fmt::Display for CallFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({:#x}, {:?})",
            self.function,
            rv_name(self.rv),
            self.rv,
            self.class
        )
    }
}

/// A start-up (or `kmsd hsm` command) failure. Each message is one line
/// that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The module file does not exist.
    #[error(
        "PKCS#11 module {} not found: install softhsm2 (apt-get install softhsm2) or set \
         root.pkcs11.module to your HSM's PKCS#11 library",
        path.display()
    )]
    ModuleNotFound {
        /// The configured module path.
        path: PathBuf,
    },
    /// The module exists but cannot be loaded or initialised.
    #[error("cannot load PKCS#11 module {}: {detail}", path.display())]
    ModuleLoad {
        /// The configured module path.
        path: PathBuf,
        /// What the loader or C_Initialize said.
        detail: String,
    },
    /// No token has the configured label.
    #[error(
        "no PKCS#11 token labelled {label:?} in {} (tokens found: {}); create one with \
         `softhsm2-util --init-token --free --label {label} --so-pin SO_PIN --pin USER_PIN` \
         (SoftHSM reads SOFTHSM2_CONF) or set root.pkcs11.token_label",
        module.display(),
        if found.is_empty() { "none".to_owned() } else { found.join(", ") }
    )]
    TokenNotFound {
        /// The configured token label.
        label: String,
        /// The module.
        module: PathBuf,
        /// Labels of the tokens that are present.
        found: Vec<String>,
    },
    /// Several tokens have the configured label.
    #[error("{count} PKCS#11 tokens are labelled {label:?}; give the kmsd token a unique label")]
    TokenAmbiguous {
        /// The configured token label.
        label: String,
        /// How many matched.
        count: usize,
    },
    /// The token refused the PIN.
    #[error(
        "the user PIN for token {label:?} was rejected ({reason}); check the file or variable \
         named by root.pkcs11.pin_file / pin_env (repeated failures lock the token)"
    )]
    PinRejected {
        /// The token label.
        label: String,
        /// The PKCS#11 return value name.
        reason: String,
    },
    /// The PIN file may be read by others.
    #[error(
        "PIN file {} has mode {mode:04o}, which lets group or others read it: run `chmod 600 {}` \
         (and change the PIN if someone may have read it)",
        path.display(),
        path.display()
    )]
    PinFileInsecure {
        /// The PIN file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The PIN could not be read, or is empty, too long or not UTF-8.
    #[error("cannot use the PKCS#11 PIN: {0}")]
    Pin(String),
    /// The root key is not in the token.
    #[error(
        "no root key labelled {key_label:?} in PKCS#11 token {token_label:?}: run \
         `kmsd hsm init --config FILE` to create it"
    )]
    RootKeyMissing {
        /// The configured key label.
        key_label: String,
        /// The token label.
        token_label: String,
    },
    /// Several AES secret keys have the root key's label.
    #[error(
        "{count} AES keys are labelled {key_label:?} in token {token_label:?}; the root key's \
         label must be unique (inspect with `pkcs11-tool --login --list-objects`)"
    )]
    RootKeyAmbiguous {
        /// The configured key label.
        key_label: String,
        /// The token label.
        token_label: String,
        /// How many matched.
        count: usize,
    },
    /// `kmsd hsm init` found a key with the label already.
    #[error(
        "a key labelled {key_label:?} already exists in token {token_label:?}; refusing to \
         create another (use it, or choose another root.pkcs11.key_label)"
    )]
    RootKeyExists {
        /// The configured key label.
        key_label: String,
        /// The token label.
        token_label: String,
    },
    /// The configuration does not describe a PKCS#11 root.
    #[error("{0}")]
    Config(String),
    /// Any other PKCS#11 failure while opening.
    #[error("{what}: {failure}")]
    Call {
        /// What was being done.
        what: String,
        /// The failed call.
        failure: CallFailure,
    },
}

/// Failures of HSM operations.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// Opening the module, token, PIN or root key failed (at start-up, or
    /// while rebuilding after a device failure).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A PKCS#11 call failed and recovery (session reopen, context rebuild)
    /// did not help.
    #[error("PKCS#11 {0}")]
    Call(CallFailure),
    /// The HSM is down or recovering, or no session became free in time:
    /// the call was not made (or not completed). Try again later.
    #[error("HSM unavailable: {0}")]
    Unavailable(String),
    /// The request was refused by kmsd's own checks (an IV that is not 12
    /// bytes, an unwrapped key that is not 32 bytes, a duplicate key id).
    #[error("{0}")]
    Invalid(String),
}

impl HsmError {
    /// How recovery saw this error: Setup problems count as DeviceFatal
    /// (the device cannot be used as configured), our own refusals as
    /// Permanent.
    pub fn class(&self) -> FaultClass {
        match self {
            HsmError::Setup(_) => FaultClass::DeviceFatal,
            HsmError::Call(f) => f.class,
            HsmError::Unavailable(_) => FaultClass::Retryable,
            HsmError::Invalid(_) => FaultClass::Permanent,
        }
    }

    /// Whether the same call may succeed later (anything but a Permanent
    /// failure).
    pub fn is_transient(&self) -> bool {
        self.class() != FaultClass::Permanent
    }

    /// The PKCS#11 return value, if this is a failed call.
    pub fn rv(&self) -> Option<CK_RV> {
        match self {
            HsmError::Call(f) => Some(f.rv),
            HsmError::Setup(SetupError::Call { failure, .. }) => Some(failure.rv),
            _ => None,
        }
    }
}

impl From<CallFailure> for HsmError {
    fn from(f: CallFailure) -> Self {
        HsmError::Call(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_of_the_codes_that_matter() {
        use FaultClass::*;
        let cases = [
            (CKR_FUNCTION_FAILED, Retryable),
            (CKR_DEVICE_MEMORY, Retryable),
            (CKR_SESSION_COUNT, Retryable),
            (CKR_SESSION_HANDLE_INVALID, SessionLost),
            (CKR_SESSION_CLOSED, SessionLost),
            (CKR_USER_NOT_LOGGED_IN, SessionLost),
            (CKR_OBJECT_HANDLE_INVALID, SessionLost),
            (CKR_WRAPPING_KEY_HANDLE_INVALID, SessionLost),
            (CKR_UNWRAPPING_KEY_HANDLE_INVALID, SessionLost),
            (CKR_KEY_HANDLE_INVALID, SessionLost),
            (CKR_DEVICE_ERROR, DeviceFatal),
            (CKR_DEVICE_REMOVED, DeviceFatal),
            (CKR_TOKEN_NOT_PRESENT, DeviceFatal),
            (CKR_CRYPTOKI_NOT_INITIALIZED, DeviceFatal),
            (CKR_GENERAL_ERROR, DeviceFatal),
            (CKR_TOKEN_NOT_RECOGNIZED, DeviceFatal),
            (CKR_WRAPPED_KEY_INVALID, Permanent),
            (CKR_WRAPPED_KEY_LEN_RANGE, Permanent),
            (CKR_ENCRYPTED_DATA_INVALID, Permanent),
            (CKR_ENCRYPTED_DATA_LEN_RANGE, Permanent),
            (CKR_MECHANISM_INVALID, Permanent),
            (CKR_TEMPLATE_INCONSISTENT, Permanent),
            (CKR_VENDOR_DEFINED + 7, Permanent),
        ];
        for (rv, class) in cases {
            assert_eq!(classify(rv), class, "{}", rv_name(rv));
        }
    }

    #[test]
    fn cryptoki_errors_map_back_to_their_numbers() {
        for &(code, _) in KNOWN_CODES {
            let err = cryptoki::error::Error::Pkcs11(
                match Rv::from(code) {
                    Rv::Error(e) => e,
                    Rv::Ok => unreachable!(),
                },
                cryptoki::context::Function::WrapKey,
            );
            assert_eq!(rv_of(&err), Some(code), "{}", rv_name(code));
        }
        assert_eq!(rv_name(CKR_WRAPPED_KEY_INVALID), "CKR_WRAPPED_KEY_INVALID");
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = SetupError::RootKeyMissing {
            key_label: "kmsd-root".into(),
            token_label: "kmsd".into(),
        };
        assert!(e.to_string().contains("run `kmsd hsm init --config FILE`"));
        let e = SetupError::ModuleNotFound {
            path: "/nope.so".into(),
        };
        assert!(e.to_string().contains("install softhsm2"));
        assert!(e.to_string().contains("root.pkcs11.module"));
        let f = CallFailure::new("C_UnwrapKey", CKR_WRAPPED_KEY_INVALID);
        assert_eq!(
            f.to_string(),
            "C_UnwrapKey: CKR_WRAPPED_KEY_INVALID (0x110, Permanent)"
        );
    }
}
