//! Seals: an HMAC-SHA256 over a point of the chain (a sequence number and
//! the hash of the record before it), so that a seal commits to every
//! record before it. Its key is made at the first start, stored only
//! wrapped by the root of trust (the keystore's `meta` row
//! `audit_seal_key`, which `kmsd migrate-root` rewraps with the backing
//! keys), and unwrapped once at start. Rewriting the log consistently, seals
//! included, therefore needs the root of trust (the HSM).

use crate::crypto::KeyMaterial;
use crate::keystore::Keystore;
use crate::root::RootOfTrust;
use anyhow::Context as _;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// What a seal's MAC covers, after this prefix: the sequence number of the
/// seal record (u64, big-endian) and the hash of the record before it.
const DOMAIN: &[u8] = b"kmsd audit seal v1\0";

/// The unwrapped seal key (zeroed on drop by [`KeyMaterial`]; never
/// printed: no Debug).
pub struct SealKey(KeyMaterial);

impl SealKey {
    /// The store's seal key, unwrapped by `root`; made, wrapped and stored
    /// first if the store has none.
    pub fn load_or_create(store: &Keystore, root: &dyn RootOfTrust) -> anyhow::Result<SealKey> {
        if store
            .audit_seal_key()
            .context("reading the audit seal key")?
            .is_none()
        {
            let key = KeyMaterial::generate();
            let wrapped = root
                .wrap(&key)
                .context("wrapping the audit seal key with the root of trust")?;
            store
                .set_audit_seal_key(&wrapped)
                .context("storing the audit seal key")?;
        }
        // Read back: a key stored by a concurrent first start would win
        // (INSERT OR IGNORE), and this proves the stored one unwraps.
        let wrapped = store
            .audit_seal_key()
            .context("reading the audit seal key")?
            .context("the audit seal key vanished from the store")?;
        let key = root
            .unwrap(&wrapped)
            .context("unwrapping the audit seal key with the root of trust")?;
        Ok(SealKey(key))
    }

    #[cfg(test)]
    /// A key from fixed bytes (tests).
    pub fn from_bytes(b: [u8; 32]) -> SealKey {
        SealKey(KeyMaterial::from_bytes(b))
    }

    fn mac(&self, seq: u64, prev: &[u8; 32]) -> HmacSha256 {
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(self.0.expose())
            .expect("HMAC takes any key length");
        m.update(DOMAIN);
        m.update(&seq.to_be_bytes());
        m.update(prev);
        m
    }

    /// The seal of the chain at `seq` (the seal record's own number), whose
    /// previous record hashes to `prev`.
    pub fn seal(&self, seq: u64, prev: &[u8; 32]) -> [u8; 32] {
        self.mac(seq, prev).finalize().into_bytes().into()
    }

    /// Whether `mac` is the seal of (`seq`, `prev`), compared in constant
    /// time.
    pub fn verify(&self, seq: u64, prev: &[u8; 32], mac: &[u8; 32]) -> bool {
        self.mac(seq, prev).verify_slice(mac).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seal_verifies_only_for_its_point_of_the_chain_and_its_key() {
        let k = SealKey::from_bytes([1; 32]);
        let m = k.seal(10, &[2; 32]);
        assert!(k.verify(10, &[2; 32], &m));
        assert!(!k.verify(11, &[2; 32], &m));
        assert!(!k.verify(10, &[3; 32], &m));
        assert!(!SealKey::from_bytes([9; 32]).verify(10, &[2; 32], &m));
    }

    #[test]
    fn the_key_is_stored_wrapped_and_the_same_key_comes_back() {
        let store = Keystore::open_in_memory().unwrap();
        let root = crate::root::FileRoot::from_key(KeyMaterial::from_bytes([7; 32]));
        let a = SealKey::load_or_create(&store, &root).unwrap();
        let wrapped = store.audit_seal_key().unwrap().unwrap();
        assert_eq!(wrapped.len(), 40, "RFC 5649 wrapping of 32 bytes");
        assert_ne!(&wrapped[..32], a.0.expose());
        let b = SealKey::load_or_create(&store, &root).unwrap();
        assert_eq!(a.seal(1, &[0; 32]), b.seal(1, &[0; 32]));
        // Another root cannot unwrap it.
        let other = crate::root::FileRoot::from_key(KeyMaterial::from_bytes([8; 32]));
        assert!(SealKey::load_or_create(&store, &other).is_err());
    }
}
