//! Single flight and waiters: who waits for which key's load, and whether a
//! load is still wanted.
//!
//! With batching on, the first miss for a [`KeyRef`] starts its load and
//! later misses join its waiters (`LoaderState::pending`), so N concurrent
//! misses cost one unwrap (the herd after a restart or a TTL expiry). With
//! batching off, every miss is a load of its own carrying its own waiter.

use super::{KeyRef, LoadedKey, LoaderState};
use kms_proto::KmsError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// How a waiter is answered (once).
pub(super) type Notify = Box<dyn FnOnce(Result<Arc<LoadedKey>, KmsError>) + Send>;

/// Someone waiting for a key, until its deadline.
pub(super) struct Waiter {
    pub(super) deadline: Instant,
    pub(super) notify: Notify,
}

/// A load queued to the store stage.
pub(crate) struct KeyLoad {
    pub(super) key: KeyRef,
    /// Only without batching: the load's own waiter (no single flight).
    pub(super) waiter: Option<Waiter>,
}

/// Adds `waiter` to the load of `key` in flight, or returns a new load to
/// queue.
pub(super) fn join_or_start(state: &LoaderState, key: KeyRef, waiter: Waiter) -> Option<KeyLoad> {
    if !state.batching {
        return Some(KeyLoad {
            key,
            waiter: Some(waiter),
        });
    }
    let mut pending = state.pending.lock();
    if let Some(waiters) = pending.get_mut(&key) {
        waiters.push(waiter);
        return None;
    }
    pending.insert(key, vec![waiter]);
    Some(KeyLoad { key, waiter: None })
}

/// The waiters of a load, taken out of the flight: its own waiter, or
/// (batching) everyone waiting for the key. Later misses start a new load.
pub(super) fn take_waiters(state: &LoaderState, key: &KeyRef, own: Option<Waiter>) -> Vec<Waiter> {
    match own {
        Some(w) => vec![w],
        None => state.pending.lock().remove(key).unwrap_or_default(),
    }
}

/// Whether a load is still wanted at `now`, giving its own waiter back
/// (`Some(None)` with batching, when someone still waits for the key).
/// A key nobody waits for any more is not unwrapped; an own waiter past
/// its deadline is answered KeyUnavailableException here.
pub(super) fn still_wanted(
    state: &LoaderState,
    key: &KeyRef,
    own: Option<Waiter>,
    now: Instant,
) -> Option<Option<Waiter>> {
    match own {
        Some(w) if w.deadline <= now => {
            state.counters.expired.fetch_add(1, Ordering::Relaxed);
            (w.notify)(Err(crate::errors::load_timed_out()));
            None
        }
        Some(w) => Some(Some(w)),
        None => state.pending.lock().contains_key(key).then_some(None),
    }
}

/// Answers waiters with a load's outcome.
pub(super) fn notify(waiters: Vec<Waiter>, result: &Result<Arc<LoadedKey>, KmsError>) {
    for w in waiters {
        (w.notify)(result.clone());
    }
}
