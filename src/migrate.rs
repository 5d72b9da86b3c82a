//! `kmsd migrate-root`: moves a data directory from one root of trust to
//! another (the file root to an HSM) without losing a key.
//!
//! Every backing key is unwrapped with the old root, wrapped with the new
//! one, and the new wrapping is unwrapped again and compared before it is
//! written; all versions and the store's root record change in one SQLite
//! transaction (begun IMMEDIATE, so no writer can slip in between reading
//! the versions and rewriting them), so an interrupted migration leaves the
//! store as it was. It needs the data directory's lock ([`DataDir`]): a
//! daemon still running on the store would keep wrapping new keys with the
//! old root into a store now bound to the new one.

use crate::crypto::KeyMaterial;
use crate::data_dir::DataDir;
use crate::keystore::{Keystore, StoreError};
use crate::root::{RootError, RootOfTrust};

/// Why a migration stopped (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The old root does not open this store.
    #[error(
        "the data directory is not under the {0} root of trust this migration starts from: {1}"
    )]
    WrongSource(&'static str, String),
    /// A root failed while rewrapping.
    #[error("{what} key {key} version {version}: {source}")]
    Root {
        /// unwrapping with the old root, wrapping with the new one, ...
        what: &'static str,
        /// Key id.
        key: String,
        /// Version.
        version: u32,
        /// The failure.
        source: RootError,
    },
    /// The new root's wrapping did not unwrap to the same key.
    #[error("the new root's wrapping of key {0} version {1} does not unwrap to the same key")]
    Mismatch(String, u32),
}

/// Rewraps every backing key of the store in `data_dir` (locked by the
/// caller) from `from` to `to`. Returns how many key versions were moved.
pub fn migrate_root(
    data_dir: &DataDir,
    from: &dyn RootOfTrust,
    to: &dyn RootOfTrust,
) -> Result<usize, MigrateError> {
    let mut store = Keystore::open(data_dir.path())?;
    let zero = KeyMaterial::from_bytes([0; 32]);
    let source_check = from.wrap(&zero).map_err(|e| MigrateError::Root {
        what: "checking the old root",
        key: "-".into(),
        version: 0,
        source: e,
    })?;
    store
        .bind_root(from.kind(), &source_check)
        .map_err(|e| MigrateError::WrongSource(from.kind(), e.to_string()))?;
    let target_check = to.wrap(&zero).map_err(|e| MigrateError::Root {
        what: "checking the new root",
        key: "-".into(),
        version: 0,
        source: e,
    })?;
    store.rewrap_all(
        to.kind(),
        &target_check,
        |id, version, wrapped| {
            rewrap(
                from,
                to,
                wrapped,
                crate::service::format_key_id(id),
                version,
            )
        },
        // The audit log's seal key: the same unwrap, wrap, check.
        |wrapped| rewrap(from, to, wrapped, "audit seal key".into(), 0),
    )
}

/// Unwraps `wrapped` with `from`, wraps it with `to`, and checks that `to`
/// gives the same material back; `key` and `version` name it in errors.
fn rewrap(
    from: &dyn RootOfTrust,
    to: &dyn RootOfTrust,
    wrapped: &[u8],
    key: String,
    version: u32,
) -> Result<Vec<u8>, MigrateError> {
    let root_err = |what| {
        let key = key.clone();
        move |source| MigrateError::Root {
            what,
            key,
            version,
            source,
        }
    };
    let material = from
        .unwrap(wrapped)
        .map_err(root_err("unwrapping with the old root"))?;
    let rewrapped = to
        .wrap(&material)
        .map_err(root_err("wrapping with the new root"))?;
    let back = to
        .unwrap(&rewrapped)
        .map_err(root_err("checking with the new root"))?;
    if back.expose() != material.expose() {
        return Err(MigrateError::Mismatch(key, version));
    }
    Ok(rewrapped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::root::FileRoot;
    use crate::service::Service;
    use kms_proto::*;
    use std::sync::Arc;

    const PEER: Identity = Identity::local(0, 0, 0);

    fn root(b: u8) -> FileRoot {
        FileRoot::from_key(KeyMaterial::from_bytes([b; 32]))
    }

    #[test]
    fn every_key_survives_a_move_to_another_root_and_the_old_root_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut blobs = Vec::new();
        {
            let svc =
                Service::open(dir.path(), Arc::new(root(1)), Default::default(), 1000).unwrap();
            for i in 0..5 {
                let Ok(Output::CreateKey(m)) =
                    svc.call(&Operation::CreateKey(CreateKey::default()), &PEER)
                else {
                    panic!()
                };
                let msg = format!("secret {i}");
                let Ok(Output::Encrypt(e)) = svc.call(
                    &Operation::Encrypt(Encrypt {
                        key_id: &m.key_id,
                        plaintext: msg.as_bytes(),
                        context: vec![],
                        ..Default::default()
                    }),
                    &PEER,
                ) else {
                    panic!()
                };
                blobs.push((e.ciphertext_blob, msg));
            }
        }
        // The audit log's seal key, wrapped by the old root.
        let mac = {
            let store = Keystore::open(dir.path()).unwrap();
            crate::audit::seal::SealKey::load_or_create(&store, &root(1))
                .unwrap()
                .seal(7, &[1; 32])
        };
        // Starting from the wrong root changes nothing.
        let locked = DataDir::open_existing(dir.path(), "test").unwrap();
        let err = migrate_root(&locked, &root(3), &root(2)).unwrap_err();
        assert!(matches!(err, MigrateError::WrongSource(..)), "{err}");
        assert_eq!(migrate_root(&locked, &root(1), &root(2)).unwrap(), 5);
        drop(locked);
        // The seal key moved with the backing keys: the new root unwraps
        // the same key, the old one no longer does.
        {
            let store = Keystore::open(dir.path()).unwrap();
            let key = crate::audit::seal::SealKey::load_or_create(&store, &root(2)).unwrap();
            assert!(key.verify(7, &[1; 32], &mac));
            assert!(crate::audit::seal::SealKey::load_or_create(&store, &root(1)).is_err());
        }
        // The old root no longer opens the store; the new one decrypts all.
        assert!(Service::open(dir.path(), Arc::new(root(1)), Default::default(), 1000).is_err());
        let svc = Service::open(dir.path(), Arc::new(root(2)), Default::default(), 1000).unwrap();
        for (blob, msg) in &blobs {
            let Ok(Output::Decrypt(d)) = svc.call(
                &Operation::Decrypt(Decrypt {
                    ciphertext_blob: blob,
                    key_id: None,
                    context: vec![],
                    ..Default::default()
                }),
                &PEER,
            ) else {
                panic!()
            };
            assert_eq!(d.plaintext.expose(), msg.as_bytes());
        }
    }
}
