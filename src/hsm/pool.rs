//! The session pool and the one way into the module: `Hsm::call`.
//!
//! Every PKCS#11 call of an opened [`Hsm`] goes through `call`, so the
//! things each call needs happen in one place: the thread rule (no call on
//! an I/O thread, asserted in debug builds), the fail-fast check while the
//! HSM is down, taking a free session, reopening a lost one, the injected
//! faults of the `fault-injection` feature, and the one retry after a lost
//! session or a rebuilt context. The operations (`root_key`,
//! `hsm_only_keys`) are closures over a session and hold no recovery logic
//! of their own.
//!
//! `cryptoki::Session` is `Send` but not `Sync`, so each session sits behind
//! its own mutex; the whole set sits behind the state's read-write lock,
//! which a rebuild takes for writing so that no call is inside the module
//! while it finalizes it.

use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use super::device::{Device, Pooled, Settings};
use super::error::{FaultClass, HsmError};
use super::health::bump;
use super::pin::Pin;
use super::Hsm;

/// Longest a call waits for a free pool session (or for a rebuild in
/// progress) before failing with [`HsmError::Unavailable`].
pub const SESSION_WAIT: Duration = Duration::from_secs(2);

/// The module and the pool's sessions, replaced together by a rebuild.
pub(super) struct State {
    /// `None` while the HSM is down.
    pub(super) device: Option<Device>,
    pub(super) sessions: Box<[Mutex<Option<Pooled>>]>,
}

impl Hsm {
    /// Runs `f` on a pool session, with the recovery described in the
    /// module docs. `function` names the PKCS#11 call for injected faults.
    pub(super) fn call<T>(
        &self,
        function: &'static str,
        mut f: impl FnMut(&Device, &Pooled, u64) -> Result<T, HsmError>,
    ) -> Result<T, HsmError> {
        crate::thread_role::assert_may_block("a PKCS#11 call");
        self.ensure_up()?;
        #[cfg(feature = "fault-injection")]
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
    #[cfg_attr(not(feature = "fault-injection"), allow(unused_variables))]
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
        bump(&self.counters.calls);
        #[cfg(feature = "fault-injection")]
        let outcome = match self.apply_fault(function, device, pooled) {
            Some(err) => Err(err),
            None => f(device, pooled, self.epoch.load(Ordering::Acquire)),
        };
        #[cfg(not(feature = "fault-injection"))]
        let outcome = f(device, pooled, self.epoch.load(Ordering::Acquire));
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
}

/// Opens the device and all pool sessions; on failure nothing stays open.
pub(super) fn connect(settings: &Settings, pin: &Pin) -> Result<(Device, Vec<Pooled>), HsmError> {
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
