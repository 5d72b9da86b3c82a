//! What a key carries beside its material: its description and tags
//! (`tags(key_id, tag_key, tag_value)`), a new key stored with its tags in
//! one transaction, and [`Keystore::in_transaction`], which runs an
//! operation's checks and changes in one IMMEDIATE transaction.

use super::{
    may_block, origin_name, read_key, state_name, KeyRecord, Keystore, StoreError,
    WrappedVersion, KEY_COLUMNS,
};
use kms_proto::{KmsError, OwnedTag, Tag};
use rusqlite::{params, Connection};

/// Why a transaction of [`Keystore::in_transaction`] did not commit: the
/// store failed, or the operation refused (a check inside the transaction
/// failed). Nothing was written either way.
#[derive(Debug)]
pub enum TxError {
    /// The store failed.
    Store(StoreError),
    /// The operation refused, with the client's error.
    Refused(KmsError),
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

impl From<rusqlite::Error> for TxError {
    fn from(e: rusqlite::Error) -> Self {
        TxError::Store(e.into())
    }
}

impl From<KmsError> for TxError {
    fn from(e: KmsError) -> Self {
        TxError::Refused(e)
    }
}

impl TxError {
    /// What the client sees (a store failure while `context` was being
    /// done is logged and answered KMSInternalException).
    pub fn into_client(self, context: &str) -> KmsError {
        match self {
            TxError::Store(e) => crate::errors::store(context, e),
            TxError::Refused(e) => e,
        }
    }
}

impl Keystore {
    /// Runs `f` in one IMMEDIATE transaction (the write lock from its first
    /// read, so its checks and its writes see one state) and commits if it
    /// succeeds; an error rolls everything back.
    pub fn in_transaction<R>(
        &mut self,
        f: impl FnOnce(&Connection) -> Result<R, TxError>,
    ) -> Result<R, TxError> {
        may_block();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let r = f(&tx)?;
        tx.commit()?;
        Ok(r)
    }

    /// Stores a new key with its first version (none for an EXTERNAL key
    /// before import), its tags and its policy, atomically; the key's pending record,
    /// if any, goes in the same transaction.
    pub fn insert_new_key(
        &mut self,
        key: &KeyRecord,
        first: Option<&WrappedVersion>,
        tags: &[Tag<'_>],
        policy: Option<&super::access::StoredPolicy>,
    ) -> Result<(), StoreError> {
        may_block();
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ),
            params![
                &key.key_id[..],
                key.created_at,
                key.description,
                state_name(key.state),
                origin_name(key.origin),
                key.current_version,
                key.deletion_date,
                key.pending_window_days,
                key.rotation_period_days,
                key.next_rotation_at,
                key.on_demand_rotations,
                key.valid_to,
            ],
        )?;
        if let Some(first) = first {
            tx.execute(
                "INSERT INTO key_versions (key_id, version, wrapped_key, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![&key.key_id[..], first.version, first.wrapped, key.created_at],
            )?;
        }
        set_tags(&tx, &key.key_id, tags)?;
        if let Some(p) = policy {
            super::access::write_policy(&tx, &key.key_id, p, key.created_at)?;
        }
        tx.execute(
            "DELETE FROM hsm_pending WHERE key_id = ?1",
            params![&key.key_id[..]],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Up to `limit` tags of `key_id` with keys after `after`, in tag-key
    /// order.
    pub fn list_tags(
        &self,
        key_id: &[u8; 16],
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<OwnedTag>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare_cached(
            "SELECT tag_key, tag_value FROM tags WHERE key_id = ?1 AND tag_key > ?2
             ORDER BY tag_key LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![&key_id[..], after.unwrap_or(""), limit], |r| {
            Ok(OwnedTag {
                key: r.get(0)?,
                value: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// A key's record, read inside a transaction.
pub fn key(conn: &Connection, key_id: &[u8; 16]) -> Result<Option<KeyRecord>, StoreError> {
    may_block();
    read_key(conn, key_id)
}

/// Sets a key's description.
pub fn set_description(
    conn: &Connection,
    key_id: &[u8; 16],
    description: &str,
) -> Result<(), StoreError> {
    may_block();
    conn.prepare_cached("UPDATE keys SET description = ?2 WHERE key_id = ?1")?
        .execute(params![&key_id[..], description])?;
    Ok(())
}

/// Adds `tags` to a key, replacing the value of a tag key it has.
pub fn set_tags(conn: &Connection, key_id: &[u8; 16], tags: &[Tag<'_>]) -> Result<(), StoreError> {
    may_block();
    let mut stmt = conn.prepare_cached(
        "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?1, ?2, ?3)
         ON CONFLICT (key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
    )?;
    for t in tags {
        stmt.execute(params![&key_id[..], t.key, t.value])?;
    }
    Ok(())
}

/// How many tags a key would have with `tags` added (new tag keys count,
/// existing ones are replaced).
pub fn count_tags_with(
    conn: &Connection,
    key_id: &[u8; 16],
    tags: &[Tag<'_>],
) -> Result<usize, StoreError> {
    may_block();
    let have: i64 = conn
        .prepare_cached("SELECT count(*) FROM tags WHERE key_id = ?1")?
        .query_row(params![&key_id[..]], |r| r.get(0))?;
    let mut exists =
        conn.prepare_cached("SELECT count(*) FROM tags WHERE key_id = ?1 AND tag_key = ?2")?;
    let mut new = 0;
    for t in tags {
        let n: i64 = exists.query_row(params![&key_id[..], t.key], |r| r.get(0))?;
        new += usize::from(n == 0);
    }
    Ok(have as usize + new)
}

/// Removes tag keys from a key (a key it does not have is no error, as in
/// AWS).
pub fn remove_tags(conn: &Connection, key_id: &[u8; 16], tag_keys: &[&str]) -> Result<(), StoreError> {
    may_block();
    let mut stmt = conn.prepare_cached("DELETE FROM tags WHERE key_id = ?1 AND tag_key = ?2")?;
    for k in tag_keys {
        stmt.execute(params![&key_id[..], k])?;
    }
    Ok(())
}

/// Deletes every tag of a key (for the key deletion, inside its
/// transaction). Returns how many.
pub fn delete_tags_of(conn: &Connection, key_id: &[u8; 16]) -> Result<usize, StoreError> {
    may_block();
    Ok(conn
        .prepare_cached("DELETE FROM tags WHERE key_id = ?1")?
        .execute(params![&key_id[..]])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_proto::{ErrorKind, KeyState, Origin};

    fn rec(id: u8, origin: Origin) -> KeyRecord {
        KeyRecord {
            key_id: [id; 16],
            created_at: 5,
            state: if origin == Origin::External {
                KeyState::PendingImport
            } else {
                KeyState::Enabled
            },
            origin,
            current_version: u32::from(origin != Origin::External),
            ..Default::default()
        }
    }

    fn tag<'a>(key: &'a str, value: &'a str) -> Tag<'a> {
        Tag { key, value }
    }

    #[test]
    fn a_new_key_is_stored_with_its_tags_and_external_keys_without_a_version() {
        let mut s = Keystore::open_in_memory().unwrap();
        let v = WrappedVersion {
            version: 1,
            wrapped: vec![1; 40],
        };
        s.insert_new_key(&rec(1, Origin::Kmsd), Some(&v), &[tag("b", "2"), tag("a", "")], None)
            .unwrap();
        s.insert_new_key(&rec(2, Origin::External), None, &[], None).unwrap();
        assert_eq!(s.get_versions(&[1; 16]).unwrap(), std::slice::from_ref(&v));
        assert!(s.get_versions(&[2; 16]).unwrap().is_empty());
        let ext = s.get_key(&[2; 16]).unwrap().unwrap();
        assert_eq!((ext.state, ext.current_version), (KeyState::PendingImport, 0));
        let tags = s.list_tags(&[1; 16], None, 50).unwrap();
        assert_eq!(
            tags.iter().map(|t| (t.key.as_str(), t.value.as_str())).collect::<Vec<_>>(),
            [("a", ""), ("b", "2")]
        );
        // A duplicate key id stores nothing, tags included.
        assert!(s
            .insert_new_key(&rec(1, Origin::Kmsd), Some(&v), &[tag("c", "3")], None)
            .is_err());
        assert_eq!(s.list_tags(&[1; 16], None, 50).unwrap().len(), 2);
    }

    #[test]
    fn tags_are_replaced_counted_paged_and_removed() {
        let mut s = Keystore::open_in_memory().unwrap();
        s.insert_new_key(&rec(1, Origin::External), None, &[tag("a", "1")], None)
            .unwrap();
        let n = s
            .in_transaction(|tx| Ok(count_tags_with(tx, &[1; 16], &[tag("a", "x"), tag("b", "y")])?))
            .unwrap();
        assert_eq!(n, 2);
        s.in_transaction(|tx| Ok(set_tags(tx, &[1; 16], &[tag("a", "x"), tag("b", "y")])?))
            .unwrap();
        let page = s.list_tags(&[1; 16], Some("a"), 1).unwrap();
        assert_eq!((page[0].key.as_str(), page[0].value.as_str()), ("b", "y"));
        s.in_transaction(|tx| Ok(remove_tags(tx, &[1; 16], &["a", "zz"])?))
            .unwrap();
        assert_eq!(s.list_tags(&[1; 16], None, 50).unwrap().len(), 1);
        assert_eq!(
            s.in_transaction(|tx| Ok(delete_tags_of(tx, &[1; 16])?)).unwrap(),
            1
        );
    }

    #[test]
    fn a_refusal_inside_a_transaction_writes_nothing() {
        let mut s = Keystore::open_in_memory().unwrap();
        s.insert_new_key(&rec(1, Origin::External), None, &[], None).unwrap();
        let r = s.in_transaction(|tx| {
            set_description(tx, &[1; 16], "changed")?;
            set_tags(tx, &[1; 16], &[tag("a", "1")])?;
            Err::<(), _>(KmsError::validation("no").into())
        });
        let e = r.unwrap_err().into_client("testing");
        assert_eq!(e.kind, ErrorKind::Validation);
        let k = s.in_transaction(|tx| Ok(key(tx, &[1; 16])?)).unwrap().unwrap();
        assert_eq!(k.description, "");
        assert!(s.list_tags(&[1; 16], None, 50).unwrap().is_empty());
    }
}
