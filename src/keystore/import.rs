//! The store's side of imported key material (BYOK): EXTERNAL keys
//! without material, the import parameters of GetParametersForImport
//! (`import_params`: one row per key, the latest call's), imported
//! material as a key's version 1, its removal, and what the scheduler and
//! start-up reconciliation read.
//!
//! A key's material digest (`keys.material_digest`, see
//! `service/imports.rs`) outlives the material: a re-import must bring the
//! same material, as in AWS. Every write is one transaction.

use kms_proto::{ExpirationModel, KeyState};
use rusqlite::{params, OptionalExtension};

use super::{key_id_from, may_block, state_name, Keystore, StoreError};

/// The parameters of one GetParametersForImport, as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportParams {
    /// The import token handed to the client.
    pub token: Vec<u8>,
    /// AWS's name of the wrapping algorithm.
    pub wrapping_algorithm: String,
    /// AWS's name of the wrapping key spec.
    pub wrapping_key_spec: String,
    /// The root's handle of the wrapping key pair; empty once the pair was
    /// destroyed (expired: the token then still answers
    /// ExpiredImportTokenException).
    pub wrapping_key: Vec<u8>,
    /// Until when the token may be used (seconds since the epoch).
    pub valid_to: i64,
}

impl std::fmt::Debug for ImportParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportParams")
            .field("token", &format_args!("<{} bytes>", self.token.len()))
            .field("wrapping_algorithm", &self.wrapping_algorithm)
            .field("wrapping_key_spec", &self.wrapping_key_spec)
            .field(
                "wrapping_key",
                &format_args!("<{} bytes>", self.wrapping_key.len()),
            )
            .field("valid_to", &self.valid_to)
            .finish()
    }
}

/// Imported material, ready to store as a key's version 1.
pub struct ImportedMaterial<'a> {
    /// The material wrapped by the root of trust.
    pub wrapped: &'a [u8],
    /// The digest of the material (`service/imports.rs`).
    pub digest: &'a [u8; 32],
    /// The key's state after the import.
    pub state: KeyState,
    /// When the material expires (`None`: it does not).
    pub valid_to: Option<i64>,
    /// The expiration model asked for.
    pub expiration_model: ExpirationModel,
    /// The token the import used: its parameters are deleted with it (and
    /// only they, should a newer GetParametersForImport have replaced
    /// them).
    pub token: &'a [u8],
    /// Its wrapping key, recorded pending in the same transaction (the
    /// caller destroys it next).
    pub retire: [u8; 20],
    /// When (the version's creation time).
    pub now: i64,
}

impl Keystore {
    /// Records that import wrapping key `id` is about to be made in the
    /// root of trust: a crash before its parameters are stored leaves this
    /// record, and start-up reconciliation destroys the key.
    pub fn begin_wrapping_key(&self, id: &[u8; 20], now: i64) -> Result<(), StoreError> {
        may_block();
        self.conn.execute(
            "INSERT OR IGNORE INTO import_pending (wrapping_key_id, created_at) VALUES (?1, ?2)",
            params![&id[..], now],
        )?;
        Ok(())
    }

    /// Forgets the pending record of wrapping key `id` (stored, or
    /// destroyed).
    pub fn end_wrapping_key(&self, id: &[u8; 20]) -> Result<(), StoreError> {
        may_block();
        self.conn.execute(
            "DELETE FROM import_pending WHERE wrapping_key_id = ?1",
            params![&id[..]],
        )?;
        Ok(())
    }

    /// Wrapping keys recorded as pending: being made, or retired and not
    /// yet destroyed.
    pub fn pending_wrapping_keys(&self) -> Result<Vec<[u8; 20]>, StoreError> {
        may_block();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT wrapping_key_id FROM import_pending ORDER BY wrapping_key_id")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| {
            <[u8; 20]>::try_from(r?.as_slice())
                .map_err(|_| StoreError::Corrupt("wrapping key id is not 20 bytes".into()))
        })
        .collect()
    }

    /// Records `p` as `key_id`'s import parameters, replacing any, and
    /// settles the pending record of their wrapping key `pair`; the
    /// replaced parameters' wrapping key (`pair_of` their token) is
    /// recorded pending in the same transaction. Returns the replaced
    /// parameters (whose wrapping key the caller destroys).
    pub fn put_import_params(
        &mut self,
        key_id: &[u8; 16],
        p: &ImportParams,
        pair: &[u8; 20],
        pair_of: impl Fn(&[u8]) -> Option<[u8; 20]>,
        now: i64,
    ) -> Result<Option<ImportParams>, StoreError> {
        may_block();
        let tx = self.conn.transaction()?;
        let old = read_params(&tx, key_id)?;
        if let Some(retired) = old
            .as_ref()
            .filter(|o| !o.wrapping_key.is_empty())
            .and_then(|o| pair_of(&o.token))
        {
            tx.execute(
                "INSERT OR IGNORE INTO import_pending (wrapping_key_id, created_at) VALUES (?1, ?2)",
                params![&retired[..], now],
            )?;
        }
        tx.execute(
            "DELETE FROM import_pending WHERE wrapping_key_id = ?1",
            params![&pair[..]],
        )?;
        tx.execute(
            "INSERT OR REPLACE INTO import_params
             (key_id, token, wrapping_algorithm, wrapping_key_spec, wrapping_key, valid_to)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                &key_id[..],
                p.token,
                p.wrapping_algorithm,
                p.wrapping_key_spec,
                p.wrapping_key,
                p.valid_to
            ],
        )?;
        tx.commit()?;
        Ok(old)
    }

    /// `key_id`'s import parameters, if it has any.
    pub fn import_params(&self, key_id: &[u8; 16]) -> Result<Option<ImportParams>, StoreError> {
        may_block();
        read_params(&self.conn, key_id)
    }

    /// The digest of the material `key_id` was given last (kept when the
    /// material is deleted or expires).
    pub fn material_digest(&self, key_id: &[u8; 16]) -> Result<Option<[u8; 32]>, StoreError> {
        may_block();
        let digest: Option<Option<Vec<u8>>> = self
            .conn
            .query_row(
                "SELECT material_digest FROM keys WHERE key_id = ?1",
                params![&key_id[..]],
                |r| r.get(0),
            )
            .optional()?;
        digest
            .flatten()
            .map(|d| {
                <[u8; 32]>::try_from(d.as_slice())
                    .map_err(|_| StoreError::Corrupt("material digest is not 32 bytes".into()))
            })
            .transpose()
    }

    /// Stores imported material as `key_id`'s version 1 and makes it
    /// current, with the key's new state and expiry, and deletes the import
    /// parameters the import used; one transaction.
    pub fn import_material(
        &mut self,
        key_id: &[u8; 16],
        m: &ImportedMaterial<'_>,
    ) -> Result<(), StoreError> {
        may_block();
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM key_versions WHERE key_id = ?1",
            params![&key_id[..]],
        )?;
        tx.execute(
            "INSERT INTO key_versions (key_id, version, wrapped_key, created_at)
             VALUES (?1, 1, ?2, ?3)",
            params![&key_id[..], m.wrapped, m.now],
        )?;
        let n = tx.execute(
            "UPDATE keys SET state = ?2, current_version = 1, valid_to = ?3,
                 expiration_model = ?4, material_digest = ?5
             WHERE key_id = ?1",
            params![
                &key_id[..],
                state_name(m.state),
                m.valid_to,
                m.expiration_model.name(),
                &m.digest[..]
            ],
        )?;
        if n != 1 {
            return Err(StoreError::Corrupt("importing material into a key that is gone".into()));
        }
        tx.execute(
            "DELETE FROM import_params WHERE key_id = ?1 AND token = ?2",
            params![&key_id[..], m.token],
        )?;
        tx.execute(
            "INSERT OR IGNORE INTO import_pending (wrapping_key_id, created_at) VALUES (?1, ?2)",
            params![&m.retire[..], m.now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Deletes `key_id`'s material (DeleteImportedKeyMaterial, or expiry):
    /// its versions go, the current version becomes 0, the expiry is
    /// cleared, the state becomes `state`. The material digest stays.
    pub fn remove_material(&mut self, key_id: &[u8; 16], state: KeyState) -> Result<(), StoreError> {
        may_block();
        let tx = self.conn.transaction()?;
        tx.execute(
            "DELETE FROM key_versions WHERE key_id = ?1",
            params![&key_id[..]],
        )?;
        tx.execute(
            "UPDATE keys SET state = ?2, current_version = 0, valid_to = NULL WHERE key_id = ?1",
            params![&key_id[..], state_name(state)],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// EXTERNAL keys whose material expired at or before `now`, oldest
    /// expiry first, at most `limit`.
    pub fn expired_material(&self, now: i64, limit: u32) -> Result<Vec<[u8; 16]>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_id FROM keys
             WHERE valid_to IS NOT NULL AND valid_to <= ?1
               AND origin = 'EXTERNAL' AND current_version > 0
             ORDER BY valid_to LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now, limit], |r| r.get::<_, Vec<u8>>(0))?;
        rows.map(|r| key_id_from(r?)).collect()
    }

    /// Import parameters that expired at or before `now` and still hold a
    /// wrapping key: (key id, token, wrapping key handle).
    #[allow(clippy::type_complexity)]
    pub fn expired_import_params(
        &self,
        now: i64,
    ) -> Result<Vec<([u8; 16], Vec<u8>, Vec<u8>)>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare_cached(
            "SELECT key_id, token, wrapping_key FROM import_params
             WHERE valid_to <= ?1 AND length(wrapping_key) > 0",
        )?;
        let rows = stmt.query_map(params![now], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
            ))
        })?;
        rows.map(|r| {
            let (id, token, handle) = r?;
            Ok((key_id_from(id)?, token, handle))
        })
        .collect()
    }

    /// Forgets the wrapping key of `key_id`'s import parameters with
    /// `token` (destroyed at expiry); the token stays, to be answered
    /// ExpiredImportTokenException.
    pub fn clear_wrapping_key(&self, key_id: &[u8; 16], token: &[u8]) -> Result<(), StoreError> {
        may_block();
        self.conn.execute(
            "UPDATE import_params SET wrapping_key = x'' WHERE key_id = ?1 AND token = ?2",
            params![&key_id[..], token],
        )?;
        Ok(())
    }

    /// The tokens of every import whose wrapping key the root still holds
    /// (for start-up reconciliation).
    pub fn live_import_tokens(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        may_block();
        let mut stmt = self
            .conn
            .prepare_cached("SELECT token FROM import_params WHERE length(wrapping_key) > 0")?;
        let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn read_params(
    conn: &rusqlite::Connection,
    key_id: &[u8; 16],
) -> Result<Option<ImportParams>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT token, wrapping_algorithm, wrapping_key_spec, wrapping_key, valid_to
             FROM import_params WHERE key_id = ?1",
        )?
        .query_row(params![&key_id[..]], |r| {
            Ok(ImportParams {
                token: r.get(0)?,
                wrapping_algorithm: r.get(1)?,
                wrapping_key_spec: r.get(2)?,
                wrapping_key: r.get(3)?,
                valid_to: r.get(4)?,
            })
        })
        .optional()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::KeyRecord;
    use kms_proto::Origin;

    fn external(id: u8) -> KeyRecord {
        KeyRecord {
            key_id: [id; 16],
            created_at: 1_000,
            description: "imported".into(),
            state: KeyState::PendingImport,
            origin: Origin::External,
            current_version: 0,
            ..Default::default()
        }
    }

    /// A stand-in for the service's token-to-pair naming.
    fn pair(token: &[u8]) -> [u8; 20] {
        let mut id = [0u8; 20];
        id[..token.len()].copy_from_slice(token);
        id
    }

    fn pair_of(token: &[u8]) -> Option<[u8; 20]> {
        Some(pair(token))
    }

    fn params_with(token: &[u8], valid_to: i64) -> ImportParams {
        ImportParams {
            token: token.to_vec(),
            wrapping_algorithm: "RSAES_OAEP_SHA_256".into(),
            wrapping_key_spec: "RSA_3072".into(),
            wrapping_key: vec![9; 20],
            valid_to,
        }
    }

    #[test]
    fn an_external_key_gets_material_loses_it_and_keeps_its_digest() {
        let mut store = Keystore::open_in_memory().unwrap();
        store.insert_new_key(&external(1), None, &[], None).unwrap();
        let key = store.get_key(&[1; 16]).unwrap().unwrap();
        assert_eq!(key.current_version, 0);
        assert_eq!(key.state, KeyState::PendingImport);
        assert!(store.get_versions(&[1; 16]).unwrap().is_empty());
        assert_eq!(store.material_digest(&[1; 16]).unwrap(), None);

        store.begin_wrapping_key(&pair(b"t1"), 10).unwrap();
        assert_eq!(store.pending_wrapping_keys().unwrap(), vec![pair(b"t1")]);
        assert_eq!(
            store
                .put_import_params(&[1; 16], &params_with(b"t1", 50), &pair(b"t1"), pair_of, 10)
                .unwrap(),
            None
        );
        assert!(store.pending_wrapping_keys().unwrap().is_empty(), "stored: settled");
        store.begin_wrapping_key(&pair(b"t2"), 20).unwrap();
        let replaced = store
            .put_import_params(&[1; 16], &params_with(b"t2", 60), &pair(b"t2"), pair_of, 20)
            .unwrap()
            .unwrap();
        assert_eq!(replaced.token, b"t1");
        assert_eq!(store.import_params(&[1; 16]).unwrap().unwrap().token, b"t2");
        // The replaced pair is pending until its destruction is settled.
        assert_eq!(store.pending_wrapping_keys().unwrap(), vec![pair(b"t1")]);
        store.end_wrapping_key(&pair(b"t1")).unwrap();
        assert!(store.pending_wrapping_keys().unwrap().is_empty());

        let material = ImportedMaterial {
            wrapped: &[7; 40],
            digest: &[3; 32],
            state: KeyState::Enabled,
            valid_to: Some(500),
            expiration_model: ExpirationModel::KeyMaterialExpires,
            // An older token: the newer parameters stay.
            token: b"t1",
            retire: pair(b"t1"),
            now: 100,
        };
        store.import_material(&[1; 16], &material).unwrap();
        let key = store.get_key(&[1; 16]).unwrap().unwrap();
        assert_eq!((key.current_version, key.state, key.valid_to), (1, KeyState::Enabled, Some(500)));
        assert_eq!(store.get_versions(&[1; 16]).unwrap().len(), 1);
        assert!(store.import_params(&[1; 16]).unwrap().is_some());
        store
            .import_material(
                &[1; 16],
                &ImportedMaterial {
                    token: b"t2",
                    retire: pair(b"t2"),
                    ..material
                },
            )
            .unwrap();
        assert!(store.import_params(&[1; 16]).unwrap().is_none());
        assert_eq!(
            store.pending_wrapping_keys().unwrap(),
            vec![pair(b"t1"), pair(b"t2")],
            "the used pairs are pending destruction"
        );
        assert_eq!(store.get_versions(&[1; 16]).unwrap().len(), 1, "still one version");

        assert_eq!(store.expired_material(499, 10).unwrap(), Vec::<[u8; 16]>::new());
        assert_eq!(store.expired_material(500, 10).unwrap(), vec![[1; 16]]);

        store.remove_material(&[1; 16], KeyState::PendingImport).unwrap();
        let key = store.get_key(&[1; 16]).unwrap().unwrap();
        assert_eq!((key.current_version, key.state, key.valid_to), (0, KeyState::PendingImport, None));
        assert!(store.get_versions(&[1; 16]).unwrap().is_empty());
        assert_eq!(store.material_digest(&[1; 16]).unwrap(), Some([3; 32]));
        assert!(store.expired_material(1_000, 10).unwrap().is_empty());
    }

    #[test]
    fn expired_parameters_lose_their_wrapping_key_but_keep_their_token() {
        let mut store = Keystore::open_in_memory().unwrap();
        store.insert_new_key(&external(2), None, &[], None).unwrap();
        store.insert_new_key(&external(3), None, &[], None).unwrap();
        store
            .put_import_params(&[2; 16], &params_with(b"a", 100), &pair(b"a"), pair_of, 0)
            .unwrap();
        store
            .put_import_params(&[3; 16], &params_with(b"b", 200), &pair(b"b"), pair_of, 0)
            .unwrap();
        let due = store.expired_import_params(150).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0, due[0].1.as_slice()), ([2; 16], &b"a"[..]));
        assert_eq!(store.live_import_tokens().unwrap().len(), 2);
        store.clear_wrapping_key(&[2; 16], b"a").unwrap();
        assert!(store.expired_import_params(150).unwrap().is_empty());
        let p = store.import_params(&[2; 16]).unwrap().unwrap();
        assert!(p.wrapping_key.is_empty());
        assert_eq!(p.token, b"a");
        assert_eq!(store.live_import_tokens().unwrap(), vec![b"b".to_vec()]);
        assert!(format!("{p:?}").contains("<1 bytes>"));
    }
}
