//! The lifecycle's due work: deletions whose waiting period ended,
//! automatic rotations, imported material and import tokens that expired.
//!
//! One thread, `kmsd-scheduler`, part of the control plane: it may block
//! (the store, the root of trust) and never runs on an I/O thread. It runs
//! a pass at start, so work that came due while kmsd was stopped is done
//! before long, then one pass every `lifecycle.scheduler_interval_ms`.
//! Each pass asks every kind of due work ([`KINDS`]) what is due by the
//! service's clock ([`Service::now`]) and carries it out, one key at a
//! time, each key's change committed and invalidated like an operator's.
//! A failed key is logged and tried again at the next pass; it never stops
//! the others. Tests call [`run_due`] directly with a manual clock.
//!
//! The data path may wake it before its interval (`Wake::kick`): an
//! HSM-only key version near its encryption limit asks for a rotation
//! (`super::rotation`), which the scheduler carries out at once.

use super::Service;
use kms_proto::KmsError;
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::Duration;

/// One kind of due work: carries out what is due at `now`; returns how
/// many keys it changed.
pub type DueWork = fn(&Service, i64) -> Result<usize, KmsError>;

/// Every kind of due work, by name (for the log), in the order a pass runs
/// them.
pub const KINDS: &[(&str, DueWork)] = &[
    ("deletion", super::deletion::run_due),
    ("rotation", super::rotation::run_due),
    ("imported material expiry", super::imports::expire_material),
    ("import parameters expiry", super::imports::expire_import_parameters),
];

/// What wakes the scheduler thread: its interval, a kick (work asked for
/// by the data path), or its stop.
#[derive(Default)]
pub(crate) struct Wake {
    state: Mutex<WakeState>,
    cv: Condvar,
}

#[derive(Default)]
struct WakeState {
    kicked: bool,
    stopped: bool,
}

impl Wake {
    /// Wakes the scheduler for a pass now (cheap: a lock and a notify; no
    /// blocking call, so any thread may kick).
    pub(crate) fn kick(&self) {
        self.state.lock().kicked = true;
        self.cv.notify_all();
    }

    /// Waits for a kick, the stop or `interval`; true if stopped.
    fn wait(&self, interval: Duration) -> bool {
        let mut s = self.state.lock();
        if !s.kicked && !s.stopped {
            self.cv.wait_for(&mut s, interval);
        }
        s.kicked = false;
        s.stopped
    }

    fn set_stopped(&self, stopped: bool) {
        self.state.lock().stopped = stopped;
        self.cv.notify_all();
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Keys changed, by kind of work.
    pub done: Vec<(&'static str, usize)>,
    /// Kinds that failed (logged; tried again at the next pass).
    pub failed: Vec<&'static str>,
}

impl Pass {
    #[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
    /// Keys changed in all.
    pub fn total(&self) -> usize {
        self.done.iter().map(|(_, n)| n).sum()
    }
}

/// Carries out everything due now, by the service's clock.
pub fn run_due(svc: &Service) -> Pass {
    crate::thread_role::assert_may_block("the lifecycle scheduler");
    let now = svc.now();
    let mut pass = Pass::default();
    for (name, work) in KINDS {
        match work(svc, now) {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(work = name, keys = n, "lifecycle: due work done");
                }
                pass.done.push((name, n));
            }
            Err(e) => {
                tracing::error!(work = name, error = %e, "lifecycle: due work failed; retried at the next pass");
                pass.failed.push(name);
            }
        }
    }
    pass
}

/// The scheduler thread; stopped (and joined) on drop.
pub struct Scheduler {
    svc: Arc<Service>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Scheduler {
    /// Starts the thread: a pass now, then one every `interval`.
    ///
    /// # Errors
    ///
    /// The thread could not be spawned.
    pub fn start(svc: Arc<Service>, interval: Duration) -> std::io::Result<Scheduler> {
        svc.wake.set_stopped(false);
        let own = Arc::clone(&svc);
        let thread = std::thread::Builder::new()
            .name("kmsd-scheduler".into())
            .spawn(move || loop {
                run_due(&own);
                if own.wake.wait(interval) {
                    return;
                }
            })?;
        Ok(Scheduler {
            svc,
            thread: Some(thread),
        })
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.svc.wake.set_stopped(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
