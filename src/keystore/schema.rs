//! The store's schema and its migrations.
//!
//! The schema version lives in the `meta` table (`schema_version`, decimal
//! text). A new store is created at version 1 (the schema kmsd shipped
//! first) and then migrated like any old one, so that every store goes
//! through the same steps. An old store is upgraded at open, all steps in
//! one IMMEDIATE transaction: a crash or a failure part-way leaves it
//! exactly as it was. A store newer than this kmsd knows is refused, never
//! written. See docs/formats.md for the tables.

use super::StoreError;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// The schema version this kmsd writes.
pub const SCHEMA_VERSION: i64 = 3;

/// Version 1: keys, their wrapped versions, HSM-only usage reservations and
/// pending HSM-only keys (kmsd 0.1).
const V1: &str = "
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    key_id          BLOB PRIMARY KEY CHECK (length(key_id) = 16),
    created_at      INTEGER NOT NULL,
    description     TEXT NOT NULL,
    state           TEXT NOT NULL,
    origin          TEXT NOT NULL,
    current_version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS key_versions (
    key_id      BLOB NOT NULL REFERENCES keys(key_id),
    version     INTEGER NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hsm_usage (
    key_id   BLOB NOT NULL,
    version  INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hsm_pending (
    key_id     BLOB NOT NULL,
    version    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
) WITHOUT ROWID;
";

/// Version 2: the key lifecycle. Keys gain their usage, deletion date,
/// rotation schedule, on-demand rotation count and imported-material
/// expiry; versions record how they were made; aliases, tags and import
/// parameters get tables of their own; an EXTERNAL key keeps the digest of
/// its imported material (a re-import must bring the same), and import
/// wrapping keys being made or retired in the root of trust are recorded
/// until they are settled (as `hsm_pending` does for HSM-only keys).
/// Columns a v1 store lacks get the values a v1 key had (ENCRYPT_DECRYPT,
/// no deletion, no rotation, never expires). A pending HSM-only key version
/// records why it is pending (`reason`: 'create', 'rotate' or 'delete'; a
/// v1 store's were all CreateKey's), so that start-up and the scheduler
/// know whether its token object is to be kept or destroyed. Deleted keys leave their id
/// (`deleted_keys`), so that a ciphertext under one is answered
/// NotFoundException (the key was deleted), not InvalidCiphertextException
/// (a blob naming a key that never was).
const V2: &str = "
ALTER TABLE keys ADD COLUMN key_usage TEXT NOT NULL DEFAULT 'ENCRYPT_DECRYPT';
ALTER TABLE keys ADD COLUMN deletion_date INTEGER;
ALTER TABLE keys ADD COLUMN pending_window_days INTEGER;
ALTER TABLE keys ADD COLUMN rotation_period_days INTEGER;
ALTER TABLE keys ADD COLUMN next_rotation_at INTEGER;
ALTER TABLE keys ADD COLUMN on_demand_rotations INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN valid_to INTEGER;
ALTER TABLE keys ADD COLUMN expiration_model TEXT;
CREATE INDEX keys_by_deletion_date ON keys (deletion_date) WHERE deletion_date IS NOT NULL;
CREATE INDEX keys_by_next_rotation ON keys (next_rotation_at) WHERE next_rotation_at IS NOT NULL;
CREATE INDEX keys_by_valid_to ON keys (valid_to) WHERE valid_to IS NOT NULL;
ALTER TABLE key_versions ADD COLUMN rotation_type TEXT;
CREATE TABLE aliases (
    name       TEXT PRIMARY KEY,
    key_id     BLOB NOT NULL REFERENCES keys(key_id),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX aliases_by_key ON aliases (key_id, name);
CREATE TABLE tags (
    key_id    BLOB NOT NULL REFERENCES keys(key_id),
    tag_key   TEXT NOT NULL,
    tag_value TEXT NOT NULL,
    PRIMARY KEY (key_id, tag_key)
) WITHOUT ROWID;
CREATE TABLE import_params (
    key_id            BLOB PRIMARY KEY REFERENCES keys(key_id),
    token             BLOB NOT NULL,
    wrapping_algorithm TEXT NOT NULL,
    wrapping_key_spec TEXT NOT NULL,
    wrapping_key      BLOB NOT NULL,
    valid_to          INTEGER NOT NULL
) WITHOUT ROWID;
ALTER TABLE keys ADD COLUMN material_digest BLOB;
CREATE TABLE import_pending (
    wrapping_key_id BLOB PRIMARY KEY CHECK (length(wrapping_key_id) = 20),
    created_at      INTEGER NOT NULL
) WITHOUT ROWID;
ALTER TABLE hsm_pending ADD COLUMN reason TEXT NOT NULL DEFAULT 'create';
CREATE TABLE deleted_keys (
    key_id     BLOB PRIMARY KEY CHECK (length(key_id) = 16),
    deleted_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 3: access control. Each key's policy (`key_policies`: the
/// document as given and the user and group names it used, resolved when
/// it was stored) and its grants (`grants`). Keys of a version 2 store get
/// the default policy of the daemon's administrators at the first start
/// (`Keystore::fill_missing_policies`: the text depends on the config, so
/// not here).
const V3: &str = "
CREATE TABLE key_policies (
    key_id     BLOB NOT NULL REFERENCES keys(key_id),
    name       TEXT NOT NULL,
    policy     TEXT NOT NULL,
    names      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, name)
) WITHOUT ROWID;
CREATE TABLE grants (
    grant_id    TEXT PRIMARY KEY,
    key_id      BLOB NOT NULL REFERENCES keys(key_id),
    name        TEXT,
    grantee     TEXT NOT NULL,
    retiring    TEXT,
    operations  TEXT NOT NULL,
    constraints TEXT,
    issuing     TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX grants_by_key ON grants (key_id, created_at, grant_id);
CREATE INDEX grants_by_retiring ON grants (retiring, grant_id) WHERE retiring IS NOT NULL;
";

/// The migrations, in order: `MIGRATIONS[i]` takes a store from version
/// `i + 1` to `i + 2`.
const MIGRATIONS: &[&str] = &[V2, V3];

const _: () = assert!(MIGRATIONS.len() as i64 + 1 == SCHEMA_VERSION);

/// Reads the stored schema version (`None`: a new, empty database).
pub(super) fn stored_version(conn: &Connection) -> Result<Option<i64>, StoreError> {
    let has_meta: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
        [],
        |r| r.get(0),
    )?;
    if !has_meta {
        let tables: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if tables > 0 {
            return Err(StoreError::Corrupt(
                "the database has tables but no schema version: it is not a kmsd keystore".into(),
            ));
        }
        return Ok(None);
    }
    // Text or blob: kmsd writes a blob, a hand-edited store may hold text.
    let v: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| Ok(r.get_ref(0)?.as_bytes().map(<[u8]>::to_vec).unwrap_or_default()),
        )
        .optional()?;
    let Some(v) = v else {
        return Err(StoreError::Corrupt(
            "the keystore has no schema version".into(),
        ));
    };
    std::str::from_utf8(&v)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= 1)
        .map(Some)
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "unreadable schema version {:?}",
                String::from_utf8_lossy(&v)
            ))
        })
}

/// Brings the database to [`SCHEMA_VERSION`]: creates a new one, upgrades
/// an old one in one transaction, refuses a newer one. Returns the version
/// it found (`None` for a new database).
pub(super) fn migrate(conn: &mut Connection) -> Result<Option<i64>, StoreError> {
    // IMMEDIATE: the write lock from the first read, so two openers cannot
    // both decide to migrate.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found = stored_version(&tx)?;
    let from = match found {
        None => {
            tx.execute_batch(V1)?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('schema_version', ?1)",
                params![b"1".to_vec()],
            )?;
            1
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::TooNew {
                found: v,
                supported: SCHEMA_VERSION,
            })
        }
        Some(v) => v,
    };
    for (i, step) in MIGRATIONS.iter().enumerate().skip(from as usize - 1) {
        tx.execute_batch(step)?;
        tracing::info!(
            from = i + 1,
            to = i + 2,
            "keystore schema migrated"
        );
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'schema_version'",
        params![SCHEMA_VERSION.to_string().into_bytes()],
    )?;
    tx.commit()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_store_with_a_key(path: &std::path::Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('schema_version', ?1)",
            params![b"1".to_vec()],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO keys VALUES (?1, 1700000000, 'old key', 'Disabled', 'KMSD', 1)",
            params![vec![7u8; 16]],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO key_versions VALUES (?1, 1, ?2, 1700000000)",
            params![vec![7u8; 16], vec![9u8; 40]],
        )
        .unwrap();
    }

    #[test]
    fn a_v1_store_is_upgraded_with_its_keys_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::super::DB_FILE);
        v1_store_with_a_key(&path);
        let store = super::super::Keystore::open(dir.path()).unwrap();
        let k = store.get_key(&[7; 16]).unwrap().unwrap();
        assert_eq!(k.description, "old key");
        assert_eq!(k.state, kms_proto::KeyState::Disabled);
        assert_eq!(k.deletion_date, None);
        assert_eq!(k.rotation_period_days, None);
        assert_eq!(k.on_demand_rotations, 0);
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        drop(store);
        // Opening again changes nothing.
        let store = super::super::Keystore::open(dir.path()).unwrap();
        assert_eq!(store.get_key(&[7; 16]).unwrap().unwrap().description, "old key");
    }

    #[test]
    fn a_failed_migration_leaves_the_store_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::super::DB_FILE);
        v1_store_with_a_key(&path);
        // A table in the way of version 2's: the migration fails part-way.
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE tags (x INTEGER);")
            .unwrap();
        assert!(super::super::Keystore::open(dir.path()).is_err());
        let conn = Connection::open(&path).unwrap();
        assert_eq!(stored_version(&conn).unwrap(), Some(1));
        let cols: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_table_info('keys') WHERE name = 'deletion_date'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(cols, 0, "no column of version 2 was added");
    }

    #[test]
    fn a_newer_store_is_refused_and_not_touched() {
        let dir = tempfile::tempdir().unwrap();
        drop(super::super::Keystore::open(dir.path()).unwrap());
        let path = dir.path().join(super::super::DB_FILE);
        Connection::open(&path)
            .unwrap()
            .execute(
                "UPDATE meta SET value = '99' WHERE name = 'schema_version'",
                [],
            )
            .unwrap();
        let err = super::super::Keystore::open(dir.path()).err().unwrap();
        let shown = err.to_string();
        assert!(shown.contains("99") && shown.contains("newer"), "{shown}");
        assert_eq!(
            stored_version(&Connection::open(&path).unwrap()).unwrap(),
            Some(99)
        );
    }

    #[test]
    fn a_database_that_is_not_a_keystore_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(super::super::DB_FILE);
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE other (x INTEGER);")
            .unwrap();
        let err = super::super::Keystore::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("not a kmsd keystore"), "{err}");
    }
}
