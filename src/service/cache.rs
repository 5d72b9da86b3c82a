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

use super::LoadedKey;
use parking_lot::{Mutex, RwLock};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bounded, expiring map from key id to unwrapped key.
pub struct KeyCache {
    map: RwLock<HashMap<[u8; 16], Arc<LoadedKey>>>,
    // Insertion order: (id, loaded_at). An id may appear more than once
    // after a reload; only the entry whose time matches the map's is live.
    order: Mutex<VecDeque<([u8; 16], Instant)>>,
    max: usize,
    ttl: Duration,
}

impl KeyCache {
    /// A cache of at most `max` keys, each kept `ttl` after loading.
    pub fn new(max: usize, ttl: Duration) -> KeyCache {
        KeyCache {
            map: RwLock::new(HashMap::new()),
            order: Mutex::new(VecDeque::new()),
            max: max.max(1),
            ttl,
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

    /// Whether the key is cached and fresh (no clone).
    pub fn contains(&self, id: &[u8; 16]) -> bool {
        self.map
            .read()
            .get(id)
            .is_some_and(|k| k.loaded_at.elapsed() < self.ttl)
    }

    /// Caches `key`, evicting the oldest entries beyond the bound.
    pub fn insert(&self, key: Arc<LoadedKey>) {
        let id = key.record.key_id;
        let at = key.loaded_at;
        let mut order = self.order.lock();
        let mut map = self.map.write();
        map.insert(id, key);
        order.push_back((id, at));
        while map.len() > self.max {
            let Some((old, t)) = order.pop_front() else {
                break;
            };
            if map.get(&old).is_some_and(|k| k.loaded_at == t) {
                map.remove(&old);
            }
        }
        // Stale queue entries (reloaded keys) never outnumber live ones by
        // much; trim them when they do, so the queue stays bounded too.
        if order.len() > 2 * self.max {
            order.retain(|(i, t)| map.get(i).is_some_and(|k| k.loaded_at == *t));
        }
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

    /// Removes one key (e.g. after a state change that reloads it).
    pub fn remove(&self, id: &[u8; 16]) {
        self.map.write().remove(id);
    }

    /// Keys cached now (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.map.read().len()
    }

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
        Arc::new(LoadedKey::new(
            KeyRecord {
                key_id: [n; 16],
                created_at: 0,
                description: String::new(),
                state: KeyState::Enabled,
                origin: Origin::Kmsd,
                current_version: 1,
            },
            vec![crate::service::Backing::Soft(XaesKey::new(
                &KeyMaterial::from_bytes([n; 32]),
            ))],
        ))
    }

    #[test]
    fn bounded_by_evicting_the_oldest() {
        let c = KeyCache::new(3, Duration::from_secs(60));
        for n in 0..5 {
            c.insert(key(n));
        }
        assert_eq!(c.len(), 3);
        assert!(c.get(&[0; 16]).is_none() && c.get(&[1; 16]).is_none());
        assert!(c.get(&[4; 16]).is_some());
        // A reload moves a key to the back of the line.
        c.insert(key(2));
        c.insert(key(5));
        assert!(c.get(&[2; 16]).is_some(), "reloaded key evicted first");
        assert!(c.get(&[3; 16]).is_none());
    }

    #[test]
    fn entries_expire_after_the_ttl_and_are_swept() {
        let c = KeyCache::new(10, Duration::from_millis(30));
        c.insert(key(1));
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
        c.insert(k);
        c.insert(key(8));
        // The cache held the only strong reference: the material is gone
        // (and was zeroized by XaesKey's Drop).
        assert!(weak.upgrade().is_none());
    }
}
