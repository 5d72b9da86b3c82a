//! Alias rows: `aliases(name PK, key_id, created_at, updated_at)`.
//!
//! Reads for the whole table (the service's in-memory copy, at open) and
//! pages (ListAliases) are `Keystore` methods; the pieces of a write are
//! free functions over a connection, so that an operation composes its
//! checks and its change inside one transaction
//! ([`Keystore::in_transaction`]), and the key deletion can drop a key's
//! aliases inside its own ([`delete_for_key`]).

use super::{key_id_from, may_block, Keystore, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// An alias as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasRow {
    /// The whole name (`alias/...`).
    pub name: String,
    /// The key it names.
    pub key_id: [u8; 16],
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    /// When it was last pointed at a key (seconds since the Unix epoch).
    pub updated_at: i64,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Vec<u8>, i64, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
}

fn to_alias((name, id, created_at, updated_at): (String, Vec<u8>, i64, i64)) -> Result<AliasRow, StoreError> {
    Ok(AliasRow {
        name,
        key_id: key_id_from(id)?,
        created_at,
        updated_at,
    })
}

impl Keystore {
    /// Every alias (name, key id): what the service's alias table is
    /// loaded from.
    pub fn all_aliases(&self) -> Result<Vec<(String, [u8; 16])>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare("SELECT name, key_id FROM aliases")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        rows.map(|r| {
            let (name, id) = r?;
            Ok((name, key_id_from(id)?))
        })
        .collect()
    }

    /// Up to `limit` aliases with names after `after`, in name order; only
    /// `key`'s when given.
    pub fn list_aliases(
        &self,
        key: Option<&[u8; 16]>,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AliasRow>, StoreError> {
        may_block();
        let after = after.unwrap_or("");
        let rows: Vec<_> = match key {
            Some(id) => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT name, key_id, created_at, updated_at FROM aliases
                     WHERE key_id = ?1 AND name > ?2 ORDER BY name LIMIT ?3",
                )?;
                let rows = stmt.query_map(params![&id[..], after, limit], row)?;
                rows.collect::<Result<_, _>>()?
            }
            None => {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT name, key_id, created_at, updated_at FROM aliases
                     WHERE name > ?1 ORDER BY name LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![after, limit], row)?;
                rows.collect::<Result<_, _>>()?
            }
        };
        rows.into_iter().map(to_alias).collect()
    }
}

/// The alias `name`, if it exists.
pub fn get(conn: &Connection, name: &str) -> Result<Option<AliasRow>, StoreError> {
    may_block();
    conn.prepare_cached("SELECT name, key_id, created_at, updated_at FROM aliases WHERE name = ?1")?
        .query_row(params![name], row)
        .optional()?
        .map(to_alias)
        .transpose()
}

/// How many aliases `key_id` has.
pub fn count_for_key(conn: &Connection, key_id: &[u8; 16]) -> Result<u32, StoreError> {
    may_block();
    let n: u32 = conn
        .prepare_cached("SELECT count(*) FROM aliases WHERE key_id = ?1")?
        .query_row(params![&key_id[..]], |r| r.get(0))?;
    Ok(n)
}

/// Adds the alias `name` for `key_id` (the name must be free).
pub fn insert(conn: &Connection, name: &str, key_id: &[u8; 16], now: i64) -> Result<(), StoreError> {
    may_block();
    conn.prepare_cached(
        "INSERT INTO aliases (name, key_id, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)",
    )?
    .execute(params![name, &key_id[..], now])?;
    Ok(())
}

/// Points the existing alias `name` at `key_id`.
pub fn retarget(conn: &Connection, name: &str, key_id: &[u8; 16], now: i64) -> Result<(), StoreError> {
    may_block();
    let n = conn
        .prepare_cached("UPDATE aliases SET key_id = ?2, updated_at = ?3 WHERE name = ?1")?
        .execute(params![name, &key_id[..], now])?;
    if n != 1 {
        return Err(StoreError::Corrupt(format!("alias {name:?} vanished mid-update")));
    }
    Ok(())
}

/// Deletes the alias `name`; false if there was none.
pub fn delete(conn: &Connection, name: &str) -> Result<bool, StoreError> {
    may_block();
    let n = conn
        .prepare_cached("DELETE FROM aliases WHERE name = ?1")?
        .execute(params![name])?;
    Ok(n == 1)
}

/// The names of `key_id`'s aliases, in name order.
pub fn names_of(conn: &Connection, key_id: &[u8; 16]) -> Result<Vec<String>, StoreError> {
    may_block();
    let mut stmt = conn.prepare_cached("SELECT name FROM aliases WHERE key_id = ?1 ORDER BY name")?;
    let rows = stmt.query_map(params![&key_id[..]], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Deletes every alias of `key_id` (the key deletion calls it inside its
/// transaction; then `Service::forget_aliases_of` after the commit).
/// Returns the names deleted.
pub fn delete_for_key(conn: &Connection, key_id: &[u8; 16]) -> Result<Vec<String>, StoreError> {
    may_block();
    let names: Vec<String> = {
        let mut stmt = conn.prepare_cached("SELECT name FROM aliases WHERE key_id = ?1")?;
        let rows = stmt.query_map(params![&key_id[..]], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    conn.prepare_cached("DELETE FROM aliases WHERE key_id = ?1")?
        .execute(params![&key_id[..]])?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::{KeyRecord, WrappedVersion};

    fn store_with_keys(ids: &[u8]) -> Keystore {
        let mut s = Keystore::open_in_memory().unwrap();
        for &id in ids {
            let rec = KeyRecord {
                key_id: [id; 16],
                current_version: 1,
                ..Default::default()
            };
            s.insert_key(
                &rec,
                &WrappedVersion {
                    version: 1,
                    wrapped: vec![id; 40],
                },
            )
            .unwrap();
        }
        s
    }

    #[test]
    fn aliases_round_trip_page_in_name_order_and_go_with_their_key() {
        let mut s = store_with_keys(&[1, 2]);
        s.in_transaction(|tx| {
            insert(tx, "alias/b", &[1; 16], 10)?;
            insert(tx, "alias/a", &[2; 16], 11)?;
            insert(tx, "alias/c", &[1; 16], 12)?;
            Ok(())
        })
        .unwrap();
        let page = s.list_aliases(None, None, 2).unwrap();
        assert_eq!(
            page.iter().map(|a| a.name.as_str()).collect::<Vec<_>>(),
            ["alias/a", "alias/b"]
        );
        let rest = s.list_aliases(None, Some("alias/b"), 2).unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].name, "alias/c");
        let of1 = s.list_aliases(Some(&[1; 16]), None, 10).unwrap();
        assert_eq!(of1.len(), 2);
        assert_eq!(count_for_key(&s.conn, &[1; 16]).unwrap(), 2);
        s.in_transaction(|tx| Ok(retarget(tx, "alias/b", &[2; 16], 20)?))
            .unwrap();
        let b = get(&s.conn, "alias/b").unwrap().unwrap();
        assert_eq!((b.key_id, b.created_at, b.updated_at), ([2; 16], 10, 20));
        let gone = s
            .in_transaction(|tx| Ok(delete_for_key(tx, &[2; 16])?))
            .unwrap();
        assert_eq!(gone, ["alias/a", "alias/b"]);
        assert_eq!(s.all_aliases().unwrap(), [("alias/c".to_owned(), [1; 16])]);
        assert!(!delete(&s.conn, "alias/a").unwrap());
        assert!(delete(&s.conn, "alias/c").unwrap());
    }

    #[test]
    fn an_alias_of_a_missing_key_or_a_taken_name_is_refused() {
        let mut s = store_with_keys(&[1]);
        assert!(s
            .in_transaction(|tx| Ok(insert(tx, "alias/x", &[9; 16], 0)?))
            .is_err());
        s.in_transaction(|tx| Ok(insert(tx, "alias/x", &[1; 16], 0)?))
            .unwrap();
        assert!(s
            .in_transaction(|tx| Ok(insert(tx, "alias/x", &[1; 16], 0)?))
            .is_err());
        assert_eq!(s.all_aliases().unwrap().len(), 1);
    }
}
