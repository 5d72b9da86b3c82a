//! The cache of unwrapped backing keys: bounded in size, entries expire a
//! fixed time after loading, and a key's material is zeroized when its last
//! holder lets go (eviction drops the cache's `Arc<LoadedKey>`; `XaesKey`
//! zeroizes on drop).
//!
//! Written by hand rather than taken from a caching crate because the hot
//! path must stay one read lock and one hash lookup (every data-key
//! operation does it; general caches such as moka record each access for
//! their eviction policy). Entries expire a fixed time after *loading*, so
//! insertion order is expiry order and a FIFO queue is both the eviction
//! order at capacity and the expiry sweep.
//!
//! **Invalidation.** Every key has a revision ([`KeyCache::revision`]);
//! [`KeyCache::invalidate`] bumps it and drops the key's entry, under the
//! map's write lock. A load reads the revision *before* it reads the store
//! and inserts only if the revision is unchanged ([`KeyCache::insert`]), so
//! a load that read the store before a change cannot put the old key back
//! after the change was invalidated. Revisions live in a fixed array of
//! counters indexed by the key id's first bytes rather than one per key:
//! memory stays bounded whatever the number of keys, and a bump for
//! another key of the same counter only makes a load in flight at that
//! moment load once more (invalidations are control-plane events).

#[cfg(any(test, feature = "internals"))]
use super::keys::KeyRef;
use super::LoadedKey;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Revision counters (a power of two).
const REVISIONS: usize = 1024;

/// A key's revision as a load saw it before reading the store (see
/// [`KeyCache::revision`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revision(u64);

/// Bounded, expiring map from key id to unwrapped key.
pub struct KeyCache {
    map: RwLock<HashMap<[u8; 16], Arc<LoadedKey>>>,
    // Insertion order: (id, loaded_at). An id may appear more than once
    // after a reload; only the entry whose time matches the map's is live.
    order: Mutex<VecDeque<([u8; 16], Instant)>>,
    /// Most keys held.
    capacity: usize,
    ttl: Duration,
    /// Revision counters, by [`revision_slot`].
    revisions: Box<[AtomicU64]>,
}

/// The revision counter of a key id (ids are random UUIDs: their first
/// bytes spread evenly).
fn revision_slot(id: &[u8; 16]) -> usize {
    usize::from(u16::from_le_bytes([id[0], id[1]])) & (REVISIONS - 1)
}

impl KeyCache {
    /// A cache of at most `capacity` keys, each kept `ttl` after loading.
    pub fn new(capacity: usize, ttl: Duration) -> KeyCache {
        KeyCache {
            map: RwLock::new(HashMap::new()),
            order: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ttl,
            revisions: (0..REVISIONS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The key, if cached and not expired.
    pub fn get(&self, id: &[u8; 16]) -> Option<Arc<LoadedKey>> {
        let map = self.map.read();
        let k = map.get(id)?;
        if k.loaded_at.elapsed() >= self.ttl {
            return None;
        }
        Some(Arc::clone(k))
    }

    #[cfg(any(test, feature = "internals"))]
    /// Whether the key is cached and fresh (no clone).
    pub fn contains(&self, id: &[u8; 16]) -> bool {
        self.map
            .read()
            .get(id)
            .is_some_and(|k| k.loaded_at.elapsed() < self.ttl)
    }

    #[cfg(any(test, feature = "internals"))]
    /// Whether a request needing `key` can run without a load: the key is
    /// cached and fresh, and the version it names is unwrapped (or is not
    /// one of the key's: the request fails without a load). No clone.
    pub fn ready(&self, key: &KeyRef) -> bool {
        self.map.read().get(&key.id).is_some_and(|k| {
            k.loaded_at.elapsed() < self.ttl && key.version.is_none_or(|v| k.has_version(v))
        })
    }

    /// The key's revision now. A load takes it before it reads the store
    /// and hands it to [`KeyCache::insert`].
    pub fn revision(&self, id: &[u8; 16]) -> Revision {
        Revision(self.revisions[revision_slot(id)].load(Ordering::Acquire))
    }

    /// Whether the key's revision is still `seen` (no invalidation since).
    pub fn is_current(&self, id: &[u8; 16], seen: Revision) -> bool {
        self.revision(id) == seen
    }

    /// Whether `key`, cached at some point, is still what the store holds:
    /// no invalidation of its id since it was cached. One atomic load: the
    /// data path asks it of every entry it did not just take from the map
    /// (admission's lookup, a prefetch), so that a request queued before a
    /// change and run after its acknowledgement loads the key again. An
    /// entry never cached (its load raced an invalidation) is not fresh.
    #[inline]
    pub fn is_fresh(&self, key: &LoadedKey) -> bool {
        let cached_at = key.revision.load(Ordering::Acquire);
        cached_at != u64::MAX && self.revision(key.id()).0 == cached_at
    }

    /// Caches `key`, loaded from what the store held at revision `seen`,
    /// evicting the oldest entries beyond the capacity. Returns false, and
    /// caches nothing, if the key was invalidated since `seen`: what the
    /// load read may be older than the change.
    pub fn insert(&self, key: Arc<LoadedKey>, seen: Revision) -> bool {
        let id = *key.id();
        let at = key.loaded_at;
        let mut order = self.order.lock();
        let mut map = self.map.write();
        // Checked under the write lock that `invalidate` takes to bump it.
        if self.revision(&id) != seen {
            return false;
        }
        key.revision.store(seen.0, Ordering::Release);
        map.insert(id, key);
        order.push_back((id, at));
        while map.len() > self.capacity {
            let Some((old, t)) = order.pop_front() else {
                break;
            };
            if map.get(&old).is_some_and(|k| k.loaded_at == t) {
                map.remove(&old);
            }
        }
        // Stale queue entries (reloaded keys) never outnumber live ones by
        // much; trim them when they do, so the queue stays bounded too.
        if order.len() > 2 * self.capacity {
            order.retain(|(i, t)| map.get(i).is_some_and(|k| k.loaded_at == *t));
        }
        true
    }

    /// Bumps the key's revision and drops its entry: loads that read the
    /// store before now will not cache what they read.
    pub fn invalidate(&self, id: &[u8; 16]) {
        let dropped = {
            let mut map = self.map.write();
            self.revisions[revision_slot(id)].fetch_add(1, Ordering::AcqRel);
            map.remove(id)
        };
        // Released outside the lock (zeroizing is cheap, but not free).
        drop(dropped);
    }

    /// Drops expired entries (their material is zeroized once no request
    /// holds them). Returns how many were dropped.
    pub fn sweep(&self) -> usize {
        let mut order = self.order.lock();
        let mut dropped = Vec::new();
        {
            let mut map = self.map.write();
            while let Some(&(id, t)) = order.front() {
                if t.elapsed() < self.ttl {
                    break;
                }
                order.pop_front();
                if map.get(&id).is_some_and(|k| k.loaded_at == t) {
                    if let Some(k) = map.remove(&id) {
                        dropped.push(k);
                    }
                }
            }
        }
        // Dropped outside the lock: zeroizing is cheap, but not free.
        dropped.len()
    }

    /// Keys cached now (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    #[cfg(any(test, feature = "internals"))]
    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{KeyMaterial, XaesKey};
    use crate::keystore::KeyRecord;
    use kms_proto::{KeyState, Origin};

    fn key(n: u8) -> Arc<LoadedKey> {
        let k = LoadedKey::new(
            KeyRecord {
                key_id: [n; 16],
                created_at: 0,
                description: String::new(),
                state: KeyState::Enabled,
                origin: Origin::Kmsd,
                current_version: 1,
                ..Default::default()
            },
            1,
            crate::service::access::KeyAccess::for_tests(),
        );
        k.fill(
            1,
            crate::service::Backing::Soft(XaesKey::new(&KeyMaterial::from_bytes([n; 32]))),
        );
        Arc::new(k)
    }

    /// Inserts at the key's current revision (nothing invalidated it).
    fn put(c: &KeyCache, k: Arc<LoadedKey>) {
        let seen = c.revision(k.id());
        assert!(c.insert(k, seen));
    }

    #[test]
    fn bounded_by_evicting_the_oldest() {
        let c = KeyCache::new(3, Duration::from_secs(60));
        for n in 0..5 {
            put(&c, key(n));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&[0; 16]).is_none() && c.get(&[1; 16]).is_none());
        assert!(c.get(&[4; 16]).is_some());
        // A reload moves a key to the back of the line.
        put(&c, key(2));
        put(&c, key(5));
        assert!(c.get(&[2; 16]).is_some(), "reloaded key evicted first");
        assert!(c.get(&[3; 16]).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl_and_are_swept() {
        let c = KeyCache::new(10, Duration::from_millis(30));
        put(&c, key(1));
        assert!(c.contains(&[1; 16]));
        std::thread::sleep(Duration::from_millis(40));
        assert!(c.get(&[1; 16]).is_none());
        assert!(!c.contains(&[1; 16]));
        assert_eq!(c.sweep(), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn evicted_keys_are_released() {
        let c = KeyCache::new(1, Duration::from_secs(60));
        let k = key(7);
        let weak = Arc::downgrade(&k);
        put(&c, k);
        put(&c, key(8));
        // The cache held the only strong reference: the material is gone
        // (and was zeroized by XaesKey's Drop).
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn an_invalidated_key_is_dropped_and_not_put_back_by_an_older_load() {
        let c = KeyCache::new(10, Duration::from_secs(60));
        put(&c, key(1));
        // A load of key 2 reads its revision, then the store...
        let seen = c.revision(&[2; 16]);
        // ...while the control plane changes key 2 and invalidates it.
        c.invalidate(&[2; 16]);
        assert!(!c.insert(key(2), seen), "an older load cached its key");
        assert!(!c.contains(&[2; 16]));
        // A load that started after the invalidation caches.
        assert!(c.insert(key(2), c.revision(&[2; 16])));
        c.invalidate(&[1; 16]);
        assert!(c.get(&[1; 16]).is_none());
        assert!(c.contains(&[2; 16]));
    }
}
