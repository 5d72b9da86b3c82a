//! The raw PKCS#11 calls that cryptoki's safe API cannot make for us.
//!
//! **Why this module is unsafe.** Everything else in `hsm` goes through
//! cryptoki's safe wrappers. Six things do not, each for a measured or
//! stated reason:
//!
//! - `C_WrapKey` and `C_GetAttributeValue(CKA_VALUE)` in **one call** with a
//!   preallocated buffer. cryptoki always asks for the size first and then
//!   calls again; SoftHSM does the whole wrap on the size query too, so that
//!   doubles the cost of every wrap (`benches/hsm.rs` measures both). Our
//!   sizes are known (a wrapped 32-byte key is 40 bytes, a backing key is
//!   32), so one call suffices and a too-small buffer is itself the answer
//!   "this is not a 32-byte key".
//! - `C_WrapKey` / `C_UnwrapKey` with **any mechanism number**. The KWP
//!   mechanism is configurable (`root.pkcs11.kwp_mechanism`: SoftHSM files
//!   RFC 5649 under 0x210A, the standard under 0x210B), and cryptoki 0.12
//!   builds a `Mechanism` only from numbers it knows or from vendor numbers
//!   (>= 0x80000000); 0x210B is neither.
//! - Key bytes that must not be left in freed heap: the backing key imported
//!   for wrapping (`C_CreateObject` with `CKA_VALUE`) and the unwrapped key
//!   read back (`CKA_VALUE`) go through caller-owned, zeroized buffers, where
//!   cryptoki would copy them into plain `Vec`s.
//! - AES-GCM `C_Encrypt` / `C_Decrypt` in one call each (cryptoki queries the
//!   size first), with the plaintext in a caller-owned zeroized buffer.
//! - The fault-injection hook's real faults (feature `fault-injection`
//!   only): closing a session handle or finalizing the module underneath
//!   the pool, so the HSM itself answers with the error codes recovery has
//!   to handle.
//! - cryptoki's way of wrapping and reading a value, size query first
//!   (feature `bench-ffi` only), so that `benches/hsm.rs` can measure what
//!   the one-call versions save.
//!
//! **How it stays sound.** The function list comes from the module's own
//! `C_GetFunctionList`, through a second `dlopen` of the same path, which
//! returns the already-loaded library (so these are the same functions, with
//! the same state, that cryptoki calls); [`RawApi`] keeps that library handle
//! open for as long as the pointers are used. Every pointer passed to the
//! module points into a Rust value that outlives the call (locals of the
//! calling function or caller-provided slices), lengths are the lengths of
//! those slices, and output lengths are checked against the buffers before
//! they are used. Handles are plain integers; a stale one makes the module
//! return an error code, never undefined behaviour on our side.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::path::Path;
use std::ptr;

use cryptoki_sys::{
    CKA_CLASS, CKA_DECRYPT, CKA_ENCRYPT, CKA_EXTRACTABLE, CKA_KEY_TYPE, CKA_PRIVATE, CKA_SENSITIVE,
    CKA_TOKEN, CKA_UNWRAP, CKA_VALUE, CKA_WRAP, CKK_AES, CKM_AES_GCM, CKO_SECRET_KEY,
    CKR_ARGUMENTS_BAD, CKR_BUFFER_TOO_SMALL, CKR_FUNCTION_NOT_SUPPORTED, CKR_OK, CK_ATTRIBUTE,
    CK_BBOOL, CK_FALSE, CK_FUNCTION_LIST, CK_GCM_PARAMS, CK_KEY_TYPE, CK_MECHANISM,
    CK_MECHANISM_TYPE, CK_OBJECT_CLASS, CK_OBJECT_HANDLE, CK_RV, CK_SESSION_HANDLE, CK_TRUE,
    CK_ULONG, CK_UNAVAILABLE_INFORMATION,
};

/// The module's function list, called directly.
pub(crate) struct RawApi {
    /// Keeps the module loaded while `list`'s pointers are in use.
    _lib: cryptoki_sys::Pkcs11,
    list: CK_FUNCTION_LIST,
}

/// Result of a raw call: the PKCS#11 return value on failure.
pub(crate) type RawResult<T> = Result<T, CK_RV>;

fn check(rv: CK_RV) -> RawResult<()> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(rv)
    }
}

fn ulong(n: usize) -> RawResult<CK_ULONG> {
    CK_ULONG::try_from(n).map_err(|_| CKR_ARGUMENTS_BAD)
}

/// A `CK_ATTRIBUTE` pointing at `value`, which must outlive the call that
/// uses the attribute.
fn attr<T>(type_: CK_ULONG, value: &T) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_,
        pValue: value as *const T as *mut c_void,
        ulValueLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

fn bool_attr(type_: CK_ULONG, value: bool) -> CK_ATTRIBUTE {
    attr(type_, if value { &TRUE } else { &FALSE })
}

static TRUE: CK_BBOOL = CK_TRUE;
static FALSE: CK_BBOOL = CK_FALSE;
static SECRET_KEY: CK_OBJECT_CLASS = CKO_SECRET_KEY;
static AES: CK_KEY_TYPE = CKK_AES;

macro_rules! func {
    ($self:ident, $name:ident) => {
        $self.list.$name.ok_or(CKR_FUNCTION_NOT_SUPPORTED)?
    };
}

impl RawApi {
    /// Loads `module` (already loaded by cryptoki: this only takes another
    /// reference) and copies its function list.
    pub(crate) fn load(module: &Path) -> Result<RawApi, String> {
        // SAFETY: loading a shared library runs its initialisers; this is
        // the PKCS#11 module cryptoki has just loaded from the same path, so
        // nothing runs that has not run already.
        let lib = unsafe { cryptoki_sys::Pkcs11::new(module) }.map_err(|e| e.to_string())?;
        if lib.C_GetFunctionList.is_err() {
            return Err("the module has no C_GetFunctionList".to_owned());
        }
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: C_GetFunctionList exists (checked above) and writes one
        // pointer to a function list owned by the module.
        let rv = unsafe { lib.C_GetFunctionList(&mut list) };
        if rv != CKR_OK || list.is_null() {
            return Err(format!("C_GetFunctionList failed ({rv:#x})"));
        }
        // SAFETY: the module returned a valid, non-null pointer to its
        // function list, which lives as long as the module is loaded; we copy
        // it (a struct of function pointers) while `lib` keeps it loaded.
        let list = unsafe { *list };
        Ok(RawApi { _lib: lib, list })
    }

    /// Imports `value` as an extractable, non-sensitive AES session key that
    /// can be wrapped (the backing key about to be wrapped).
    pub(crate) fn create_wrappable_key(
        &self,
        session: CK_SESSION_HANDLE,
        value: &[u8],
    ) -> RawResult<CK_OBJECT_HANDLE> {
        let f = func!(self, C_CreateObject);
        let mut template = [
            attr(CKA_CLASS, &SECRET_KEY),
            attr(CKA_KEY_TYPE, &AES),
            bool_attr(CKA_TOKEN, false),
            bool_attr(CKA_SENSITIVE, false),
            bool_attr(CKA_EXTRACTABLE, true),
            bool_attr(CKA_ENCRYPT, false),
            bool_attr(CKA_DECRYPT, false),
            bool_attr(CKA_WRAP, false),
            bool_attr(CKA_UNWRAP, false),
            CK_ATTRIBUTE {
                type_: CKA_VALUE,
                pValue: value.as_ptr() as *mut c_void,
                ulValueLen: ulong(value.len())?,
            },
        ];
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: the template points at statics and at `value`, all alive
        // for the call; the module only reads them (PKCS#11 templates are
        // input for C_CreateObject) and writes one handle.
        check(unsafe {
            f(
                session,
                template.as_mut_ptr(),
                template.len() as CK_ULONG,
                &mut handle,
            )
        })?;
        Ok(handle)
    }

    /// `C_CopyObject` with `CKA_TOKEN = false`: a session copy of `object`
    /// that keeps its other attributes (a sensitive, non-extractable key
    /// stays so; C_CopyObject cannot relax those) and lives as long as the
    /// session. Returns the copy's handle.
    pub(crate) fn copy_to_session(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> RawResult<CK_OBJECT_HANDLE> {
        let f = func!(self, C_CopyObject);
        let mut template = [bool_attr(CKA_TOKEN, false)];
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: the template points at a static; the module reads it and
        // writes one handle.
        check(unsafe {
            f(
                session,
                object,
                template.as_mut_ptr(),
                template.len() as CK_ULONG,
                &mut handle,
            )
        })?;
        Ok(handle)
    }

    /// `C_WrapKey` in one call into `out`; returns the wrapped length.
    /// `CKR_BUFFER_TOO_SMALL` if `out` is too short (the module then reports
    /// the length it needs, which we do not use: callers size `out` exactly).
    pub(crate) fn wrap(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        wrapping_key: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
        out: &mut [u8],
    ) -> RawResult<usize> {
        let f = func!(self, C_WrapKey);
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut len = ulong(out.len())?;
        // SAFETY: `mech` and `len` are locals; `out` is a live buffer of
        // `len` bytes, which the module writes at most `len` bytes into.
        check(unsafe {
            f(
                session,
                &mut mech,
                wrapping_key,
                key,
                out.as_mut_ptr(),
                &mut len,
            )
        })?;
        written(len, out.len())
    }

    #[cfg(feature = "bench-ffi")]
    /// `C_WrapKey` the way cryptoki does it: a size query, then the call.
    /// Only for the benchmark that compares the two.
    pub(crate) fn wrap_two_calls(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        wrapping_key: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> RawResult<Vec<u8>> {
        let f = func!(self, C_WrapKey);
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut len: CK_ULONG = 0;
        // SAFETY: a size query: null output pointer, the module writes `len`.
        check(unsafe {
            f(
                session,
                &mut mech,
                wrapping_key,
                key,
                ptr::null_mut(),
                &mut len,
            )
        })?;
        let mut out = vec![0u8; usize::try_from(len).map_err(|_| CKR_ARGUMENTS_BAD)?];
        self.wrap(session, mechanism, wrapping_key, key, &mut out)
            .map(|n| {
                out.truncate(n);
                out
            })
    }

    /// `C_UnwrapKey` into an extractable, non-sensitive AES session object,
    /// private (`CKA_PRIVATE`) or not as asked. The template has no
    /// `CKA_VALUE_LEN`: with KWP the length comes from the wrapped data,
    /// and SoftHSM refuses the template if it is given.
    pub(crate) fn unwrap(
        &self,
        session: CK_SESSION_HANDLE,
        mechanism: CK_MECHANISM_TYPE,
        unwrapping_key: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        private: bool,
    ) -> RawResult<CK_OBJECT_HANDLE> {
        let f = func!(self, C_UnwrapKey);
        let mut mech = CK_MECHANISM {
            mechanism,
            pParameter: ptr::null_mut(),
            ulParameterLen: 0,
        };
        let mut template = [
            attr(CKA_CLASS, &SECRET_KEY),
            attr(CKA_KEY_TYPE, &AES),
            bool_attr(CKA_TOKEN, false),
            bool_attr(CKA_SENSITIVE, false),
            bool_attr(CKA_EXTRACTABLE, true),
            bool_attr(CKA_PRIVATE, private),
        ];
        let mut handle: CK_OBJECT_HANDLE = 0;
        // SAFETY: all pointers are to locals, statics or `wrapped`, alive
        // for the call; PKCS#11 declares pWrappedKey as input only (the
        // `*mut` is a C API artefact), and the module writes one handle.
        check(unsafe {
            f(
                session,
                &mut mech,
                unwrapping_key,
                wrapped.as_ptr() as *mut u8,
                ulong(wrapped.len())?,
                template.as_mut_ptr(),
                template.len() as CK_ULONG,
                &mut handle,
            )
        })?;
        Ok(handle)
    }

    /// Reads `CKA_VALUE` in one call into `out`; returns its length.
    /// `CKR_BUFFER_TOO_SMALL` if the value is longer than `out`.
    pub(crate) fn get_value(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        out: &mut [u8],
    ) -> RawResult<usize> {
        let f = func!(self, C_GetAttributeValue);
        let mut template = [CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: out.as_mut_ptr() as *mut c_void,
            ulValueLen: ulong(out.len())?,
        }];
        // SAFETY: the attribute points at `out`, alive for the call, and
        // gives its length; the module writes at most that many bytes.
        check(unsafe { f(session, object, template.as_mut_ptr(), 1) })?;
        let len = template[0].ulValueLen;
        if len == CK_UNAVAILABLE_INFORMATION {
            // Sensitive or absent: get_attributes in cryptoki would silently
            // drop it; we refuse.
            return Err(cryptoki_sys::CKR_ATTRIBUTE_SENSITIVE);
        }
        written(len, out.len())
    }

    #[cfg(feature = "bench-ffi")]
    /// Reads `CKA_VALUE` the way cryptoki's `get_attributes` does for a
    /// variable-length attribute: a size query, then the call. Only for the
    /// benchmark that compares the two.
    pub(crate) fn get_value_two_calls(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
        out: &mut [u8],
    ) -> RawResult<usize> {
        let f = func!(self, C_GetAttributeValue);
        let mut template = [CK_ATTRIBUTE {
            type_: CKA_VALUE,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        }];
        // SAFETY: a size query: null value pointer, the module writes the
        // length only.
        check(unsafe { f(session, object, template.as_mut_ptr(), 1) })?;
        self.get_value(session, object, out)
    }

    /// Destroys an object.
    pub(crate) fn destroy(
        &self,
        session: CK_SESSION_HANDLE,
        object: CK_OBJECT_HANDLE,
    ) -> RawResult<()> {
        let f = func!(self, C_DestroyObject);
        // SAFETY: plain integer arguments.
        check(unsafe { f(session, object) })
    }

    /// AES-GCM with a 16-byte tag: `C_EncryptInit` then one `C_Encrypt` into
    /// `out`, which must hold `plaintext.len() + 16` bytes (ciphertext, then
    /// tag). Returns the length written and the IV found in the mechanism
    /// parameters afterwards (a token may write its own there).
    pub(crate) fn gcm_encrypt(
        &self,
        session: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        iv: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> RawResult<(usize, [u8; 12])> {
        if out.len() < plaintext.len() + 16 {
            return Err(CKR_BUFFER_TOO_SMALL);
        }
        let init = func!(self, C_EncryptInit);
        let encrypt = func!(self, C_Encrypt);
        gcm_call(init, encrypt, session, key, iv, aad, plaintext, out)
    }

    /// AES-GCM decryption of `ciphertext || tag` (16-byte tag) into `out`,
    /// which must be at least `ciphertext_and_tag.len()` bytes (SoftHSM asks
    /// for room for the tag too). Returns the plaintext length. A wrong tag
    /// fails the call and the module writes no plaintext we would return.
    pub(crate) fn gcm_decrypt(
        &self,
        session: CK_SESSION_HANDLE,
        key: CK_OBJECT_HANDLE,
        iv: &[u8; 12],
        aad: &[u8],
        ciphertext_and_tag: &[u8],
        out: &mut [u8],
    ) -> RawResult<usize> {
        if out.len() < ciphertext_and_tag.len() {
            return Err(CKR_BUFFER_TOO_SMALL);
        }
        let init = func!(self, C_DecryptInit);
        let decrypt = func!(self, C_Decrypt);
        gcm_call(
            init,
            decrypt,
            session,
            key,
            iv,
            aad,
            ciphertext_and_tag,
            out,
        )
        .map(|(n, _)| n)
    }

    #[cfg(feature = "fault-injection")]
    /// Closes a session handle behind cryptoki's back (fault injection: the
    /// next call on it gets a genuine `CKR_SESSION_HANDLE_INVALID`).
    pub(crate) fn close_session(&self, session: CK_SESSION_HANDLE) -> RawResult<()> {
        let f = func!(self, C_CloseSession);
        // SAFETY: plain integer argument.
        check(unsafe { f(session) })
    }

    #[cfg(feature = "fault-injection")]
    /// Finalizes the module behind the pool's back (fault injection: every
    /// call then gets a genuine `CKR_CRYPTOKI_NOT_INITIALIZED`).
    pub(crate) fn finalize(&self) -> RawResult<()> {
        let f = func!(self, C_Finalize);
        // SAFETY: C_Finalize takes a reserved pointer that must be null.
        check(unsafe { f(ptr::null_mut()) })
    }
}

/// `C_EncryptInit`/`C_DecryptInit`.
type InitFn = unsafe extern "C" fn(CK_SESSION_HANDLE, *mut CK_MECHANISM, CK_OBJECT_HANDLE) -> CK_RV;
/// `C_Encrypt`/`C_Decrypt`.
type OneShotFn =
    unsafe extern "C" fn(CK_SESSION_HANDLE, *mut u8, CK_ULONG, *mut u8, *mut CK_ULONG) -> CK_RV;

/// One AES-GCM operation (96-bit IV, 128-bit tag): `init`, then one call of
/// `op` from `input` into `out`. Callers check that `out` is large enough,
/// so the single call always ends the operation. Returns the length written
/// and the IV buffer as the module left it.
#[allow(clippy::too_many_arguments)]
fn gcm_call(
    init: InitFn,
    op: OneShotFn,
    session: CK_SESSION_HANDLE,
    key: CK_OBJECT_HANDLE,
    iv: &[u8; 12],
    aad: &[u8],
    input: &[u8],
    out: &mut [u8],
) -> RawResult<(usize, [u8; 12])> {
    let given = iv;
    let mut iv = *iv;
    let mut params = CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: aad.as_ptr() as *mut u8,
        ulAADLen: ulong(aad.len())?,
        ulTagBits: 128,
    };
    let mut mech = CK_MECHANISM {
        mechanism: CKM_AES_GCM,
        pParameter: &mut params as *mut CK_GCM_PARAMS as *mut c_void,
        ulParameterLen: std::mem::size_of::<CK_GCM_PARAMS>() as CK_ULONG,
    };
    // SAFETY: `mech` points at `params`, which points at the local IV copy
    // and at `aad`; all outlive both calls (the module may keep the
    // parameters until the operation ends, which is within this function:
    // the one-shot call always ends it except on BUFFER_TOO_SMALL, which the
    // callers' size checks rule out).
    check(unsafe { init(session, &mut mech, key) })?;
    let mut len = ulong(out.len())?;
    // SAFETY: input is read only; output is `out` with its true length; the
    // module writes at most `len` bytes.
    check(unsafe {
        op(
            session,
            input.as_ptr() as *mut u8,
            ulong(input.len())?,
            out.as_mut_ptr(),
            &mut len,
        )
    })?;
    // The module may have written into the IV buffer it was given (a token
    // generating its own IVs does); the caller compares.
    let seen = if params.ulIvLen == 12 && params.ulIvBits == 96 {
        iv
    } else {
        // Another length: reported as an IV that cannot be the one given.
        let mut other = *given;
        other[0] ^= 0xff;
        other
    };
    Ok((written(len, out.len())?, seen))
}

/// The length a module reports writing into a buffer of `capacity` bytes,
/// refused if it claims more than fits.
fn written(len: CK_ULONG, capacity: usize) -> RawResult<usize> {
    let len = usize::try_from(len).map_err(|_| CKR_ARGUMENTS_BAD)?;
    if len > capacity {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    Ok(len)
}
