//! Up and down: what the pool does after a device failure, and its
//! counters.
//!
//! A device-fatal failure rebuilds the whole context at once (close every
//! session, `C_Finalize`, `C_Initialize`, slot, login, root key, sessions)
//! and the call is retried once. If the rebuild fails the HSM is *down*:
//! calls fail fast without touching the module until the backoff (50 ms,
//! doubling to 5 s) expires, and then the first caller tries the rebuild
//! again, so kmsd recovers by itself when the HSM returns. Going down and
//! recovering are logged once each. The down flag is an atomic so that the
//! healthy path costs one load; everything else sits behind the health
//! mutex, taken only on failures.
//!
//! Also here: `input_or_device`, which decides whether an ambiguous
//! failure of an input-checking call was the input's or the device's (see
//! the module docs of [`crate::hsm`]), because the answer decides whether
//! the pool goes down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cryptoki_sys::{CKR_FUNCTION_FAILED, CKR_GENERAL_ERROR};

use super::device::Device;
use super::error::{CallFailure, FaultClass, HsmError};
use super::pool::connect;
use super::Hsm;

/// First delay before retrying a failed rebuild.
pub const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest delay between rebuild attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest a rebuild waits for in-flight calls to leave the old context.
pub(super) const REBUILD_WAIT: Duration = Duration::from_secs(10);

/// The down/up state, behind [`Hsm`]'s health mutex.
pub(super) struct Health {
    /// When the HSM went down (None while up).
    pub(super) since: Option<Instant>,
    /// Next rebuild attempt no earlier than this.
    pub(super) retry_at: Instant,
    /// Delay after the next failed attempt.
    pub(super) backoff: Duration,
    /// A rebuild is running.
    pub(super) rebuilding: bool,
    /// Why the last attempt failed (no secrets: PKCS#11 codes and labels).
    pub(super) last_error: String,
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

/// The live counters behind [`HsmStats`] (relaxed atomics: they order
/// nothing).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) calls: AtomicU64,
    pub(super) sessions_opened: AtomicU64,
    pub(super) session_recoveries: AtomicU64,
    pub(super) rebuilds: AtomicU64,
    pub(super) failed_rebuilds: AtomicU64,
    pub(super) fast_failures: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> HsmStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HsmStats {
            calls: get(&self.calls),
            sessions_opened: get(&self.sessions_opened),
            session_recoveries: get(&self.session_recoveries),
            rebuilds: get(&self.rebuilds),
            failed_rebuilds: get(&self.failed_rebuilds),
            fast_failures: get(&self.fast_failures),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Hsm {
    /// Fails fast while the HSM is down and the backoff has not expired;
    /// after it expires, the calling thread tries the rebuild.
    pub(super) fn ensure_up(&self) -> Result<(), HsmError> {
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
    pub(super) fn recover(&self, seen_generation: u64, cause: &HsmError) -> bool {
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
    pub(super) fn go_down(&self, cause: &str) {
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
    pub(super) fn schedule_retry(&self, reason: String) {
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

    /// The error of a call refused because the HSM is down, saying why and
    /// when the next attempt is due.
    pub(super) fn unavailable(&self) -> HsmError {
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

/// Re-checks an ambiguous failure of an input-checking call (see the module
/// docs): Permanent if the token still answers, else the probe's failure.
pub(super) fn input_or_device(device: &Device, failure: CallFailure) -> HsmError {
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
