//! Deadlines and sweeping, on a thread of their own (an executor thread may
//! be stuck in an HSM call for longer than any deadline): every 20 ms,
//! waiters and queued HSM frames past their deadline are answered
//! KeyUnavailableException; every second, expired cache entries and
//! failure memos are dropped. At shutdown, whoever still waits is told.

use super::flight::Waiter;
use super::LoaderState;
use crate::errors::{load_timed_out as timed_out, stopping};
use crate::service::hsm_executor::HsmExecutor;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How often waiters' deadlines are checked.
pub(super) const SWEEP_EVERY: Duration = Duration::from_millis(20);
/// How long a failed load is remembered.
pub(super) const NEGATIVE_TTL: Duration = Duration::from_millis(100);

/// The sweep thread's loop, until the loader stops.
pub(super) fn sweep(state: &LoaderState, executor: &HsmExecutor) {
    let mut last_cache_sweep = Instant::now();
    while !state.stop.load(Ordering::Acquire) {
        std::thread::sleep(SWEEP_EVERY);
        expire_waiters(state);
        executor.expire_frames();
        if last_cache_sweep.elapsed() >= Duration::from_secs(1) {
            state.core.cache.sweep();
            let now = Instant::now();
            state.negative.lock().retain(|_, (_, until)| *until > now);
            last_cache_sweep = now;
        }
    }
    let rest: Vec<Waiter> = state.pending.lock().drain().flat_map(|(_, w)| w).collect();
    for w in rest {
        (w.notify)(Err(stopping()));
    }
    executor.drain();
}

/// Answers waiters whose deadline has passed.
fn expire_waiters(state: &LoaderState) {
    let now = Instant::now();
    let mut expired = Vec::new();
    {
        let mut pending = state.pending.lock();
        pending.retain(|_, waiters| {
            let mut i = 0;
            while i < waiters.len() {
                if waiters[i].deadline <= now {
                    expired.push(waiters.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !waiters.is_empty()
        });
    }
    state
        .counters
        .expired
        .fetch_add(expired.len() as u64, Ordering::Relaxed);
    for w in expired {
        (w.notify)(Err(timed_out()));
    }
}
