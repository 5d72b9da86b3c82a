//! Who may use a key, as stored: its key policy (`key_policies`, one row
//! per key, named "default" as AWS's only policy name) and its grants
//! (`grants`). The texts are stored as given; what they compile to lives
//! in memory (`service::access`). A policy's `user:` and `group:` names are
//! resolved when it is stored and the numbers kept beside it (`names`), so
//! its meaning does not change when the user database does.

use super::{may_block, Keystore, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// AWS's one policy name.
pub const DEFAULT_POLICY_NAME: &str = "default";

/// A key policy as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPolicy {
    /// The document, as the caller gave it (GetKeyPolicy returns it).
    pub text: String,
    /// The names it used, resolved when it was stored: a JSON object
    /// `{"user:alice": 1000, "group:ops": 50}`.
    pub names: String,
}

/// A grant as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantRow {
    /// The grant's id (64 hex digits).
    pub grant_id: String,
    /// The key it is for.
    pub key_id: [u8; 16],
    /// Its name (CreateGrant's Name), if any.
    pub name: Option<String>,
    /// Who may use it (a local principal, names resolved: `uid:N`,
    /// `unit:NAME.service`, `cgroup:PATH`).
    pub grantee: String,
    /// Who may retire it, if anyone besides the usual.
    pub retiring: Option<String>,
    /// Its operations, by AWS's names.
    pub operations: Vec<String>,
    /// Its constraints as JSON (`{"EncryptionContextEquals": {...}}` /
    /// `{"EncryptionContextSubset": {...}}`), if any.
    pub constraints: Option<String>,
    /// Who created it (`uid:N`): ListGrants' IssuingAccount.
    pub issuing: String,
    /// When it was created (seconds since the epoch).
    pub created_at: i64,
}

/// A key's policy, if it has one.
pub(crate) fn read_policy(
    conn: &Connection,
    key_id: &[u8; 16],
) -> Result<Option<StoredPolicy>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT policy, names FROM key_policies WHERE key_id = ?1 AND name = ?2")?
        .query_row(params![&key_id[..], DEFAULT_POLICY_NAME], |r| {
            Ok(StoredPolicy {
                text: r.get(0)?,
                names: r.get(1)?,
            })
        })
        .optional()?)
}

/// Sets a key's policy (replacing the one it had).
pub(crate) fn write_policy(
    conn: &Connection,
    key_id: &[u8; 16],
    policy: &StoredPolicy,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO key_policies (key_id, name, policy, names, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &key_id[..],
        DEFAULT_POLICY_NAME,
        policy.text,
        policy.names,
        now
    ])?;
    Ok(())
}

const GRANT_COLUMNS: &str =
    "grant_id, key_id, name, grantee, retiring, operations, constraints, issuing, created_at";

fn row_to_grant(r: &rusqlite::Row<'_>) -> rusqlite::Result<(GrantRow, Vec<u8>)> {
    let ops: String = r.get(5)?;
    Ok((
        GrantRow {
            grant_id: r.get(0)?,
            key_id: [0; 16],
            name: r.get(2)?,
            grantee: r.get(3)?,
            retiring: r.get(4)?,
            operations: ops.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
            constraints: r.get(6)?,
            issuing: r.get(7)?,
            created_at: r.get(8)?,
        },
        r.get(1)?,
    ))
}

fn collect_grants(
    rows: impl Iterator<Item = rusqlite::Result<(GrantRow, Vec<u8>)>>,
) -> Result<Vec<GrantRow>, StoreError> {
    rows.map(|row| {
        let (mut g, id) = row?;
        g.key_id = super::key_id_from(id)?;
        Ok(g)
    })
    .collect()
}

/// Every grant of a key, oldest first (then by id).
pub(crate) fn read_grants(conn: &Connection, key_id: &[u8; 16]) -> Result<Vec<GrantRow>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants WHERE key_id = ?1 ORDER BY created_at, grant_id"
    ))?;
    let rows = stmt.query_map(params![&key_id[..]], row_to_grant)?;
    collect_grants(rows)
}

/// Stores a new grant.
pub(crate) fn insert_grant(conn: &Connection, g: &GrantRow) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO grants ({GRANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        g.grant_id,
        &g.key_id[..],
        g.name,
        g.grantee,
        g.retiring,
        g.operations.join(","),
        g.constraints,
        g.issuing,
        g.created_at
    ])?;
    Ok(())
}

/// Deletes a grant of `key_id`; false if it has no such grant.
pub(crate) fn delete_grant(
    conn: &Connection,
    key_id: &[u8; 16],
    grant_id: &str,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM grants WHERE key_id = ?1 AND grant_id = ?2")?
        .execute(params![&key_id[..], grant_id])?;
    Ok(n > 0)
}

/// A grant by id, whatever its key.
pub(crate) fn read_grant(conn: &Connection, grant_id: &str) -> Result<Option<GrantRow>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE grant_id = ?1"))?;
    let rows = stmt.query_map(params![grant_id], row_to_grant)?;
    Ok(collect_grants(rows)?.pop())
}

/// How many grants a key has.
pub(crate) fn count_grants(conn: &Connection, key_id: &[u8; 16]) -> Result<u64, StoreError> {
    let n: i64 = conn
        .prepare_cached("SELECT count(*) FROM grants WHERE key_id = ?1")?
        .query_row(params![&key_id[..]], |r| r.get(0))?;
    Ok(n as u64)
}

/// Removes a deleted key's policy and grants (inside its deletion's
/// transaction).
pub(crate) fn delete_access_of(conn: &Connection, key_id: &[u8; 16]) -> Result<(), StoreError> {
    conn.execute("DELETE FROM key_policies WHERE key_id = ?1", params![&key_id[..]])?;
    conn.execute("DELETE FROM grants WHERE key_id = ?1", params![&key_id[..]])?;
    Ok(())
}

impl Keystore {
    /// A key's policy, if it has one.
    pub fn key_policy(&self, key_id: &[u8; 16]) -> Result<Option<StoredPolicy>, StoreError> {
        may_block();
        read_policy(&self.conn, key_id)
    }

    /// Whether `key_id` was deleted (its id left in `deleted_keys`).
    pub fn was_deleted(&self, key_id: &[u8; 16]) -> Result<bool, StoreError> {
        may_block();
        super::lifecycle::was_deleted(&self.conn, key_id)
    }

    /// A key's alias names.
    pub fn alias_names_of(&self, key_id: &[u8; 16]) -> Result<Vec<String>, StoreError> {
        may_block();
        super::aliases::names_of(&self.conn, key_id)
    }

    /// A grant by id, whatever its key.
    pub fn grant(&self, grant_id: &str) -> Result<Option<GrantRow>, StoreError> {
        may_block();
        read_grant(&self.conn, grant_id)
    }

    /// A key's grants, oldest first.
    pub fn grants_of(&self, key_id: &[u8; 16]) -> Result<Vec<GrantRow>, StoreError> {
        may_block();
        read_grants(&self.conn, key_id)
    }

    /// Up to `limit` grants whose retiring principal is `retiring`, after
    /// grant id `after`, in grant-id order (ListRetirableGrants).
    pub fn grants_retirable_by(
        &self,
        retiring: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<GrantRow>, StoreError> {
        may_block();
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE retiring = ?1 AND grant_id > ?2
             ORDER BY grant_id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(params![retiring, after.unwrap_or(""), limit], row_to_grant)?;
        collect_grants(rows)
    }

    /// Up to `limit` grants of `key_id` after `after` (creation time and
    /// grant id of the last of the previous page), oldest first, only
    /// those with grant id `grant_id` and grantee `grantee` when given
    /// (ListGrants).
    pub fn list_grants(
        &self,
        key_id: &[u8; 16],
        after: Option<(i64, &str)>,
        limit: u32,
        grant_id: Option<&str>,
        grantee: Option<&str>,
    ) -> Result<Vec<GrantRow>, StoreError> {
        may_block();
        let (at, id) = after.unwrap_or((i64::MIN, ""));
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE key_id = ?1
               AND (created_at, grant_id) > (?2, ?3)
               AND (?4 IS NULL OR grant_id = ?4) AND (?5 IS NULL OR grantee = ?5)
             ORDER BY created_at, grant_id LIMIT ?6"
        ))?;
        let rows = stmt.query_map(params![&key_id[..], at, id, grant_id, grantee, limit], row_to_grant)?;
        collect_grants(rows)
    }

    /// Gives every key without a policy `policy` (keys stored before kmsd
    /// had policies: schema 2), in one transaction; how many it gave.
    pub fn fill_missing_policies(
        &mut self,
        policy: &StoredPolicy,
        now: i64,
    ) -> Result<usize, StoreError> {
        may_block();
        let tx = self.conn.transaction()?;
        let n = tx.execute(
            "INSERT INTO key_policies (key_id, name, policy, names, updated_at)
             SELECT key_id, ?1, ?2, ?3, ?4 FROM keys
             WHERE key_id NOT IN (SELECT key_id FROM key_policies)",
            params![DEFAULT_POLICY_NAME, policy.text, policy.names, now],
        )?;
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keystore::tests::rec;

    fn grant(id: &str, key: u8, retiring: Option<&str>, at: i64) -> GrantRow {
        GrantRow {
            grant_id: id.into(),
            key_id: [key; 16],
            name: None,
            grantee: "uid:7".into(),
            retiring: retiring.map(str::to_owned),
            operations: vec!["Encrypt".into(), "Decrypt".into()],
            constraints: Some(r#"{"EncryptionContextSubset":{"a":"b"}}"#.into()),
            issuing: "uid:0".into(),
            created_at: at,
        }
    }

    #[test]
    fn policies_and_grants_round_trip_and_go_with_their_key() {
        let mut s = Keystore::open_in_memory().unwrap();
        let v = crate::keystore::WrappedVersion {
            version: 1,
            wrapped: vec![1; 40],
        };
        s.insert_key(&rec(1), &v).unwrap();
        s.insert_key(&rec(2), &v).unwrap();
        assert_eq!(s.key_policy(&[1; 16]).unwrap(), None);
        let p = StoredPolicy {
            text: "{}".into(),
            names: "{}".into(),
        };
        write_policy(&s.conn, &[1; 16], &p, 5).unwrap();
        assert_eq!(s.key_policy(&[1; 16]).unwrap(), Some(p.clone()));
        // Keys without one get the given policy; the one with keeps its own.
        let fill = StoredPolicy {
            text: "fill".into(),
            names: "{}".into(),
        };
        assert_eq!(s.fill_missing_policies(&fill, 6).unwrap(), 1);
        assert_eq!(s.key_policy(&[1; 16]).unwrap(), Some(p));
        assert_eq!(s.key_policy(&[2; 16]).unwrap(), Some(fill));

        insert_grant(&s.conn, &grant("bb", 1, Some("uid:9"), 2)).unwrap();
        insert_grant(&s.conn, &grant("aa", 1, None, 3)).unwrap();
        insert_grant(&s.conn, &grant("cc", 2, Some("uid:9"), 1)).unwrap();
        let ids: Vec<_> = s.grants_of(&[1; 16]).unwrap().into_iter().map(|g| g.grant_id).collect();
        assert_eq!(ids, ["bb", "aa"], "oldest first");
        assert_eq!(s.grants_of(&[1; 16]).unwrap()[0], grant("bb", 1, Some("uid:9"), 2));
        let retirable: Vec<_> = s
            .grants_retirable_by("uid:9", None, 10)
            .unwrap()
            .into_iter()
            .map(|g| g.grant_id)
            .collect();
        assert_eq!(retirable, ["bb", "cc"]);
        assert_eq!(s.grants_retirable_by("uid:9", Some("bb"), 10).unwrap().len(), 1);
        assert_eq!(count_grants(&s.conn, &[1; 16]).unwrap(), 2);
        assert!(delete_grant(&s.conn, &[1; 16], "aa").unwrap());
        assert!(!delete_grant(&s.conn, &[2; 16], "bb").unwrap(), "another key's grant");
        assert_eq!(read_grant(&s.conn, "bb").unwrap().unwrap().key_id, [1; 16]);

        delete_access_of(&s.conn, &[1; 16]).unwrap();
        assert_eq!(s.key_policy(&[1; 16]).unwrap(), None);
        assert!(s.grants_of(&[1; 16]).unwrap().is_empty());
        assert_eq!(s.grants_of(&[2; 16]).unwrap().len(), 1, "other keys keep theirs");
    }
}
