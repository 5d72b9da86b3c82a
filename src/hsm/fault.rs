//! Fault injection (feature `fault-injection`): a test hook for the
//! recovery paths, since SoftHSM cannot be made to fail on demand.
//!
//! The hook makes the module itself answer with the codes recovery has to
//! handle where it can (a session closed underneath, the root key's session
//! copy destroyed, the module finalized), and returns a code without
//! reaching the module where it cannot. It compiles only with the feature:
//! `scripts/test.sh` runs the suite with `--all-features`, and a release
//! build of kmsd has no hook to arm.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use cryptoki_sys::CK_RV;
use parking_lot::Mutex;

use super::device::{Device, Pooled};
use super::error::{CallFailure, HsmError};
use super::health::REBUILD_WAIT;
use super::Hsm;

/// A fault the pool injects before its next session call. Costs one
/// relaxed atomic load per call when nothing is armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    /// The next call returns this PKCS#11 code without reaching the module.
    ReturnCode(CK_RV),
    /// The pool session the next call uses is closed in the module first,
    /// so the module itself answers `CKR_SESSION_HANDLE_INVALID`.
    CloseSession,
    /// The session copy of the root key is destroyed in the module first,
    /// so it answers `CKR_(UN)WRAPPING_KEY_HANDLE_INVALID`. Does nothing
    /// without `session_copy` (the root key's token object is never destroyed).
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

/// The armed faults of one [`Hsm`].
#[derive(Default)]
pub(super) struct Faults {
    /// Whether `queue` may be non-empty: the one load an unarmed call pays.
    armed: AtomicBool,
    queue: Mutex<VecDeque<InjectedFault>>,
    foreign_iv: AtomicBool,
}

impl Hsm {
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

    /// An injected [`InjectedFault::Finalize`] runs here, under the state
    /// write lock: PKCS#11 leaves `C_Finalize` concurrent with other calls
    /// undefined (SoftHSM deadlocks or crashes), so, like a rebuild, it waits
    /// for in-flight calls to leave the module first.
    pub(super) fn finalize_if_injected(&self) {
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

    /// Applies the next queued fault, if any, to the call about to run on
    /// `pooled`: an error to return instead of making the call, or `None`
    /// (nothing armed, or the fault was done to the module and the call
    /// should now meet it).
    pub(super) fn apply_fault(
        &self,
        function: &'static str,
        device: &Device,
        pooled: &Pooled,
    ) -> Option<HsmError> {
        let fault = self.take_fault()?;
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

    /// An armed [`InjectedFault::ForeignGcmIv`] changes the IV the module
    /// reported, once.
    pub(super) fn apply_foreign_gcm_iv(&self, seen: &mut [u8; 12]) {
        if self.faults.foreign_iv.load(Ordering::Relaxed)
            && self.faults.foreign_iv.swap(false, Ordering::AcqRel)
        {
            seen[0] ^= 0xff;
        }
    }
}
