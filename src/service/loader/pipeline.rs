//! The pipeline: the store stage reads queued loads' records in batches
//! (one read transaction each, through the loader's own read-only store
//! connection) and hands them to the HSM executor's threads, which unwrap
//! them on their sessions, cache them and answer their waiters.
//!
//! The two stages overlap, so the threads that own the sessions spend their
//! time in the HSM (reading records on them took ~10% of their time; see
//! docs/perf/hsm.md). An executor thread caches a whole batch and answers
//! its waiters once it is unwrapped: caching each key and waking the frames
//! that waited for it between unwraps measured 0.72 of the raw unwrap rate
//! against 0.88 (a third thread doing it measured no better).
//!
//! **Revisions.** A load reads its key's cache revision before it reads the
//! store and caches only if the revision is unchanged (see
//! [`KeyCache`](crate::service::cache::KeyCache)); its waiters are taken
//! out of the flight *before* that check, so every one of them asked before
//! any invalidation the check would have seen. A load that finds its key
//! invalidated loads it again, right there, for the same waiters.

use super::deadlines::NEGATIVE_TTL;
use super::flight::{self, KeyLoad, Waiter};
use super::{KeyRef, LoadedKey, LoaderState};
use crate::errors::unavailable;
use crate::service::cache::Revision;
use crate::service::internal;
use crate::keystore::StoredKey;
use crossbeam_channel::{Receiver, Sender};
use kms_proto::KmsError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// Loads in a row that may find their key invalidated before one is
/// answered "retry" (invalidations are control-plane events: a key changed
/// this often is being misused).
const STALE_TRIES: usize = 8;

/// A key as the store stage read it, with the cache revision it read it
/// at.
type Read = (Revision, Result<StoredKey, KmsError>);

/// A batch of loads whose records have been read, on its way to an
/// executor thread.
pub(crate) struct ReadBatch {
    keys: Vec<KeyRef>,
    read: Vec<Read>,
    // Only without batching: each load's own waiter.
    own: Vec<Option<Waiter>>,
}

/// What an unwrap made of a key.
enum Unwrapped {
    /// A new entry, to cache.
    Fresh(Arc<LoadedKey>),
    /// The cached entry, with the version asked for unwrapped into it now.
    Filled(Arc<LoadedKey>),
    /// The cached entry, which had what was asked for.
    Cached(Arc<LoadedKey>),
}

/// The store stage: takes queued loads in batches, reads the records of
/// the keys still wanted (one read transaction per batch) and passes them
/// on to the executor's threads.
pub(super) fn read_stage(state: &LoaderState, rx: &Receiver<KeyLoad>, tx: &Sender<ReadBatch>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        if state.batching {
            while batch.len() < state.batch_max {
                match rx.try_recv() {
                    Ok(load) => batch.push(load),
                    Err(_) => break,
                }
            }
        }
        let n = batch.len() as u64;
        // The executor's threads outlive this one (they exit once it drops
        // the sender), so a send fails only if one of them panicked.
        if let Some(read) = read_wanted(state, batch) {
            if tx.send(read).is_err() {
                return;
            }
        }
        // Counted once staged (tests wait for a batch to be queued).
        let c = &state.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = crate::metrics::get() {
            m.loader_batch(n as usize);
        }
        c.max_batch.fetch_max(n, Ordering::Relaxed);
    }
}

/// Drops the loads nobody waits for any more (answering expired own
/// waiters) and reads the records of the rest.
fn read_wanted(state: &LoaderState, batch: Vec<KeyLoad>) -> Option<ReadBatch> {
    let now = Instant::now();
    let mut own: Vec<Option<Waiter>> = Vec::new();
    let mut keys = Vec::with_capacity(batch.len());
    for load in batch {
        if let Some(waiter) = flight::still_wanted(state, &load.key, load.waiter, now) {
            keys.push(load.key);
            own.push(waiter);
        }
    }
    if keys.is_empty() {
        return None;
    }
    let read = read_many(state, &keys);
    Some(ReadBatch { keys, read, own })
}

/// Reads the keys' records in one read transaction, each with the
/// revision taken before it.
fn read_many(state: &LoaderState, keys: &[KeyRef]) -> Vec<Read> {
    let cache = &state.core.cache;
    let seen: Vec<Revision> = keys.iter().map(|k| cache.revision(&k.id)).collect();
    let ids: Vec<[u8; 16]> = keys.iter().map(|k| k.id).collect();
    let rows = state.reader.lock().read_keys(&ids);
    let rows: Vec<_> = match rows {
        Ok(rows) => rows
            .into_iter()
            .zip(keys)
            .map(|(row, k)| match row {
                Ok(Some(stored)) => Ok(stored),
                Ok(None) => Err(crate::errors::key_not_found(&k.id)),
                Err(crate::keystore::StoreError::KeyDeleted) => {
                    Err(crate::errors::key_deleted(&k.id))
                }
                Err(e) => Err(internal("reading key", e)),
            })
            .collect(),
        Err(e) => {
            let e = internal("reading keys", e);
            keys.iter().map(|_| Err(e.clone())).collect()
        }
    };
    seen.into_iter().zip(rows).collect()
}

/// An executor thread's part: unwraps the keys of a read batch that
/// someone still waits for, then caches them and answers their waiters
/// (whose callbacks queue the frames that waited).
pub(crate) fn unwrap_batch(state: &LoaderState, batch: ReadBatch) {
    let ReadBatch { keys, read, own } = batch;
    let mut loaded = Vec::with_capacity(keys.len());
    for ((key, (seen, stored)), own) in keys.into_iter().zip(read).zip(own) {
        // Waiters may have given up while the batch waited for this thread
        // (a slow or recovering HSM): checked again before the HSM call.
        if let Some(own) = flight::still_wanted(state, &key, own, Instant::now()) {
            loaded.push((key, seen, unwrap_one(state, &key, stored), own));
        }
    }
    let until = Instant::now() + NEGATIVE_TTL;
    for (key, seen, unwrapped, own) in loaded {
        let waiters = flight::take_waiters(state, &key, own);
        let result = match settle(state, &key, seen, unwrapped, until) {
            Some(result) => result,
            None => load_fresh(state, &key),
        };
        flight::notify(waiters, &result);
    }
}

/// Unwraps what `key` needs: a version of a cached key into that entry,
/// else a new entry (with batching, a key cached meanwhile is taken as it
/// is; without, every miss is its own unwrap, as the comparison wants).
fn unwrap_one(
    state: &LoaderState,
    key: &KeyRef,
    stored: Result<StoredKey, KmsError>,
) -> Result<Unwrapped, KmsError> {
    let stored = stored?;
    let core = &state.core;
    if let Some(cached) = core.cache.get(&key.id) {
        match key.version {
            Some(v) if !cached.has_version(v) => {
                core.fill_version(&cached, v, &stored)?;
                return Ok(Unwrapped::Filled(cached));
            }
            Some(_) => return Ok(Unwrapped::Cached(cached)),
            None if state.batching => return Ok(Unwrapped::Cached(cached)),
            None => {}
        }
    }
    core.unwrap_key(&stored, key.version)
        .map(|k| Unwrapped::Fresh(Arc::new(k)))
}

/// Caches a loaded key (or remembers the failure until `until`), unless
/// the key was invalidated since its store read (`seen`): then `None`, and
/// the caller loads it again.
fn settle(
    state: &LoaderState,
    key: &KeyRef,
    seen: Revision,
    unwrapped: Result<Unwrapped, KmsError>,
    until: Instant,
) -> Option<Result<Arc<LoadedKey>, KmsError>> {
    let (c, cache) = (&state.counters, &state.core.cache);
    let settled = match unwrapped {
        Ok(Unwrapped::Fresh(k)) => cache.insert(Arc::clone(&k), seen).then(|| {
            state.negative.lock().remove(key);
            c.loaded.fetch_add(1, Ordering::Relaxed);
            Ok(k)
        }),
        Ok(Unwrapped::Filled(k)) => cache.is_current(&key.id, seen).then(|| {
            c.loaded.fetch_add(1, Ordering::Relaxed);
            Ok(k)
        }),
        Ok(Unwrapped::Cached(k)) => cache.is_current(&key.id, seen).then_some(Ok(k)),
        Err(e) => {
            // Checked under the memo's lock: an invalidation bumps the
            // revision before it clears the memo, so a failure read before
            // it is either refused here or cleared there.
            let mut negative = state.negative.lock();
            cache.is_current(&key.id, seen).then(|| {
                negative.insert(*key, (e.clone(), until));
                c.failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            })
        }
    };
    if settled.is_none() {
        c.stale.fetch_add(1, Ordering::Relaxed);
    }
    settled
}

/// Loads `key` on the calling executor thread (from the cache or the
/// failure memo when they have it): for a frame running on the executor,
/// which must not wait for a load queued behind itself.
pub(crate) fn load_in_place(state: &LoaderState, key: &KeyRef) -> Result<Arc<LoadedKey>, KmsError> {
    if let Some(k) = state.core.cache.get(&key.id) {
        if key.version.is_none_or(|v| k.has_version(v)) {
            return Ok(k);
        }
    }
    if let Some(e) = super::remembered(state, key) {
        return Err(e);
    }
    load_fresh(state, key)
}

/// Reads and unwraps `key` here and now, again while it is invalidated
/// under the load's feet.
fn load_fresh(state: &LoaderState, key: &KeyRef) -> Result<Arc<LoadedKey>, KmsError> {
    for _ in 0..STALE_TRIES {
        let (seen, stored) = read_many(state, std::slice::from_ref(key))
            .pop()
            .expect("one read per key");
        let unwrapped = unwrap_one(state, key, stored);
        if let Some(result) = settle(state, key, seen, unwrapped, Instant::now() + NEGATIVE_TTL) {
            return result;
        }
    }
    Err(unavailable(
        "the key is being changed faster than it can be loaded; retry",
    ))
}
