//! The keystore: KMS key metadata and wrapped backing keys in SQLite.
//!
//! One database file, `<data_dir>/keys.db`, in WAL mode with
//! `synchronous=FULL`: a key reported as created is on disk, because a lost
//! backing key makes every ciphertext under it unrecoverable. Backing keys are
//! stored only wrapped by the root of trust. The `meta` table records the
//! root's kind and a key check value (the root's wrap of an all-zero key), so
//! that starting with the wrong root key fails at once instead of on the first
//! Decrypt.
//!
//! The store is used from worker threads, the key loader and the control
//! plane only, never from an I/O thread: every method that runs SQL asserts
//! it in debug builds ([`crate::thread_role::assert_may_block`]).
//!
//! The key loader reads through a connection of its own ([`StoreReader`],
//! opened read-only with [`Keystore::open_reader`]), so cache misses never
//! queue behind the service's store mutex (a CreateKey's fsync), and the
//! type says that the loader cannot write.

use kms_proto::{KeyState, Origin};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use std::path::{Path, PathBuf};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "keys.db";

pub mod access;
pub mod aliases;
pub mod annotations;
mod durable;
mod import;
pub mod lifecycle;
pub mod schema;
mod seed;

pub use import::{ImportParams, ImportedMaterial};

/// A KMS key as stored.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct KeyRecord {
    /// UUID bytes.
    pub key_id: [u8; 16],
    /// Seconds since the Unix epoch.
    pub created_at: i64,
    /// Free text.
    pub description: String,
    /// Lifecycle state.
    pub state: KeyState,
    /// Where the material came from.
    pub origin: Origin,
    /// Version new ciphertexts use (0: none yet, an EXTERNAL key before
    /// its material is imported).
    pub current_version: u32,
    /// When a key pending deletion is deleted (seconds since the epoch).
    pub deletion_date: Option<i64>,
    /// The waiting period ScheduleKeyDeletion was given, in days.
    pub pending_window_days: Option<u32>,
    /// The automatic rotation period in days, when automatic rotation is
    /// enabled.
    pub rotation_period_days: Option<u32>,
    /// When the next automatic rotation is due (seconds since the epoch).
    pub next_rotation_at: Option<i64>,
    /// On-demand rotations done so far (AWS allows 25 per key).
    pub on_demand_rotations: u32,
    /// When imported key material expires (seconds since the epoch).
    pub valid_to: Option<i64>,
}

/// The `keys` columns every read selects, in [`KeyRow`]'s order.
const KEY_COLUMNS: &str = "key_id, created_at, description, state, origin, current_version, \
     deletion_date, pending_window_days, rotation_period_days, next_rotation_at, \
     on_demand_rotations, valid_to";

/// A wrapped backing key of one key version. Not secret (wrapped), but there is
/// no reason to print it.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedVersion {
    /// Version number, from 1.
    pub version: u32,
    /// The backing key wrapped by the root of trust (RFC 5649).
    pub wrapped: Vec<u8>,
}

impl std::fmt::Debug for WrappedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WrappedVersion({}, {} bytes)",
            self.version,
            self.wrapped.len()
        )
    }
}

/// A key as the data path reads it: its record, its wrapped versions
/// (oldest first) and, for an HSM-only key, each version's reserved
/// encryptions.
pub struct StoredKey {
    /// The key's record.
    pub record: KeyRecord,
    /// Its wrapped versions, oldest first.
    pub versions: Vec<WrappedVersion>,
    /// Reserved encryptions by version (HSM-only keys; empty otherwise).
    pub usage: Vec<u64>,
    /// Its key policy (`None`: a key stored before kmsd had policies and
    /// not yet given one).
    pub policy: Option<access::StoredPolicy>,
    /// Its grants, oldest first.
    pub grants: Vec<access::GrantRow>,
    /// Its alias names.
    pub aliases: Vec<String>,
}

/// What the data path reads from a keystore, and all it reads: keys by id,
/// in batches, each batch as of one moment. The key loader holds one
/// (`Box<dyn KeySource>`); the SQLite store's [`StoreReader`] is one, and
/// a networked store would be another, with nothing on the data path
/// changed. The control plane writes through [`Keystore`].
pub trait KeySource: Send {
    /// Reads `ids` in one consistent read (a transaction): for each id, its
    /// key or `None` if there is no such key. A failure of the whole read
    /// is an `Err`; a key that cannot be read, its item's `Err`.
    fn read_keys(
        &self,
        ids: &[[u8; 16]],
    ) -> Result<Vec<Result<Option<StoredKey>, StoreError>>, StoreError>;
}

/// A store failure. Details go to the log; clients see KMSInternalException.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("keystore: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The store holds something this version cannot read.
    #[error("keystore: {0}")]
    Corrupt(String),
    /// The store was written by a newer kmsd.
    #[error(
        "keystore schema version {found} is newer than this kmsd supports ({supported}); run the kmsd that wrote it, or restore a backup"
    )]
    TooNew {
        /// The version found.
        found: i64,
        /// The newest version this kmsd reads.
        supported: i64,
    },
    /// The key was deleted (its waiting period ended): it is not in the
    /// store, and never will be again.
    #[error("keystore: the key was deleted")]
    KeyDeleted,
    /// The keystore file cannot be served from (damaged, truncated, not a
    /// keystore, too new, unreadable): one line naming the file and saying
    /// what to do. Start-up stops on it.
    #[error("keystore {} {problem}; {hint}", path.display())]
    Unusable {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What to do.
        hint: &'static str,
    },
    /// The store was created under another root of trust.
    #[error(
        "keystore was created with root of trust {stored}, not the configured {configured}; {hint}"
    )]
    RootMismatch {
        /// What the store recorded.
        stored: String,
        /// What is configured now.
        configured: String,
        /// What to do.
        hint: &'static str,
    },
}

/// The SQLite keystore.
pub struct Keystore {
    conn: Connection,
    /// Where the database lives, for [`Keystore::open_reader`].
    source: Source,
}

/// Where a store's database lives.
#[derive(Clone, Debug)]
enum Source {
    /// `<data_dir>/keys.db`.
    File(PathBuf),
    /// An in-memory database of SQLite's `memdb` VFS, shared by name with
    /// the connections of this process that open it (the loader's reader);
    /// it goes away with the last of them. Made by `open_in_memory` (tests,
    /// benches, the in-process baseline).
    #[cfg_attr(not(any(test, feature = "internals")), allow(dead_code))]
    Memory(String),
}

/// A read-only connection to the store, for the key loader: key records,
/// wrapped versions and HSM usage reservations, nothing else.
pub struct StoreReader {
    conn: Connection,
}

/// Announces a store call to the thread rules (debug builds panic on an
/// I/O thread).
#[inline]
#[track_caller]
fn may_block() {
    crate::thread_role::assert_may_block("a store call");
}

fn state_name(s: KeyState) -> &'static str {
    s.name()
}

fn state_from(s: &str) -> Result<KeyState, StoreError> {
    Ok(match s {
        "Enabled" => KeyState::Enabled,
        "Disabled" => KeyState::Disabled,
        "PendingDeletion" => KeyState::PendingDeletion,
        "PendingImport" => KeyState::PendingImport,
        other => return Err(StoreError::Corrupt(format!("unknown key state {other:?}"))),
    })
}

fn origin_name(o: Origin) -> &'static str {
    match o {
        Origin::Kmsd => "KMSD",
        Origin::External => "EXTERNAL",
        Origin::Hsm => "HSM",
    }
}

fn origin_from(s: &str) -> Result<Origin, StoreError> {
    Ok(match s {
        "KMSD" => Origin::Kmsd,
        "EXTERNAL" => Origin::External,
        "HSM" => Origin::Hsm,
        other => return Err(StoreError::Corrupt(format!("unknown origin {other:?}"))),
    })
}

fn key_id_from(v: Vec<u8>) -> Result<[u8; 16], StoreError> {
    v.try_into()
        .map_err(|_| StoreError::Corrupt("key id is not 16 bytes".into()))
}

impl Keystore {
    /// Opens the store in `data_dir`, creating a new one (atomically) if
    /// there is no `keys.db`. A store that cannot be served from is
    /// [`StoreError::Unusable`] (see `durable.rs`).
    pub fn open(data_dir: &Path) -> Result<Keystore, StoreError> {
        may_block();
        Self::open_file(data_dir)
    }

    #[cfg(any(test, feature = "internals"))]
    /// An in-memory store, for unit tests and benches. Its readers
    /// ([`Keystore::open_reader`]) see it through SQLite's `memdb` VFS,
    /// which shares one database by name between the connections of a
    /// process with the usual locks (a shared-cache `:memory:` database
    /// would answer a reader's concurrent writer SQLITE_LOCKED at once,
    /// where `busy_timeout` waits).
    pub fn open_in_memory() -> Result<Keystore, StoreError> {
        may_block();
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let uri = format!("file:/kmsd-memory-{}-{n}?vfs=memdb", std::process::id());
        let conn = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        Self::init(conn, Source::Memory(uri), false)
    }

    /// A second, read-only connection to this store, for the key loader.
    pub fn open_reader(&self) -> Result<StoreReader, StoreError> {
        may_block();
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = match &self.source {
            Source::File(path) => Connection::open_with_flags(path, flags)?,
            Source::Memory(uri) => {
                Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)?
            }
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(StoreReader { conn })
    }

    /// Sets the connection up and brings the schema up to date. `existing`:
    /// the database must already be a keystore (a file store is created
    /// whole by `durable.rs`, so an empty one is damage).
    fn init(mut conn: Connection, source: Source, existing: bool) -> Result<Keystore, StoreError> {
        if existing && schema::stored_version(&conn)?.is_none() {
            return Err(StoreError::Corrupt(
                "it is empty or holds no keystore tables".into(),
            ));
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        if let Some(v) = schema::migrate(&mut conn)? {
            // An existing store: a damaged page shows here, at start, not
            // on the first request that reads it. `quick_check` reads every
            // page once (milliseconds for 100,000 keys).
            let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
            if verdict != "ok" {
                return Err(StoreError::Corrupt(format!(
                    "integrity check failed (schema version {v}): {verdict}"
                )));
            }
        }
        Ok(Keystore { conn, source })
    }

    /// The schema version of the open store (always
    /// [`schema::SCHEMA_VERSION`] once open).
    #[cfg(any(test, feature = "internals"))]
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        may_block();
        schema::stored_version(&self.conn)?
            .ok_or_else(|| StoreError::Corrupt("no schema version".into()))
    }

    /// Records the root of trust on first use, or checks that the configured
    /// root is the one the store was created with. `check_value` is the root's
    /// wrap of an all-zero key.
    pub fn bind_root(&self, kind: &str, check_value: &[u8]) -> Result<(), StoreError> {
        may_block();
        let stored: Option<Vec<u8>> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'root_check'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let stored_kind: Option<Vec<u8>> = self
            .conn
            .query_row("SELECT value FROM meta WHERE name = 'root_kind'", [], |r| {
                r.get(0)
            })
            .optional()?;
        match (stored, stored_kind) {
            (Some(check), Some(k)) => {
                if check != check_value {
                    return Err(StoreError::RootMismatch {
                        stored: format!("{} (different key)", String::from_utf8_lossy(&k)),
                        configured: kind.to_owned(),
                        hint: "start kmsd with the root key this data directory was created with",
                    });
                }
                Ok(())
            }
            _ => {
                let tx = self.conn.unchecked_transaction()?;
                tx.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('root_kind', ?1)",
                    params![kind.as_bytes()],
                )?;
                tx.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('root_check', ?1)",
                    params![check_value],
                )?;
                tx.commit()?;
                Ok(())
            }
        }
    }

    /// The audit log's seal key, wrapped by the root of trust (the `meta`
    /// row `audit_seal_key`), if one was made.
    pub fn audit_seal_key(&self) -> Result<Option<Vec<u8>>, StoreError> {
        may_block();
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE name = 'audit_seal_key'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Stores the audit log's wrapped seal key, unless one is stored
    /// already (then that one is kept). It lives in the store so that
    /// `kmsd migrate-root` rewraps it with the backing keys, in the same
    /// transaction.
    pub fn set_audit_seal_key(&self, wrapped: &[u8]) -> Result<(), StoreError> {
        may_block();
        self.conn.execute(
            "INSERT OR IGNORE INTO meta (name, value) VALUES ('audit_seal_key', ?1)",
            params![wrapped],
        )?;
        Ok(())
    }

    #[cfg(any(test, feature = "internals"))]
    /// Number of keys stored.
    pub fn count_keys(&self) -> Result<u64, StoreError> {
        may_block();
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Records, before an HSM-only key version is generated in the token,
    /// that it is about to be: a crash between the generation and
    /// [`Keystore::insert_key`] then leaves a record that start-up
    /// reconciliation finds (and destroys the token object it names). A new
    /// key's record counts against `max_keys` like a stored key, checked in
    /// the same transaction; returns false (and records nothing) when the
    /// store is full.
    pub fn begin_hsm_only_key(
        &mut self,
        key_id: &[u8; 16],
        version: u32,
        created_at: i64,
        max_keys: u64,
    ) -> Result<bool, StoreError> {
        may_block();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let n: i64 = tx.query_row(
            "SELECT (SELECT count(*) FROM keys) + (SELECT count(*) FROM hsm_pending WHERE reason = 'create')",
            [],
            |r| r.get(0),
        )?;
        if n as u64 >= max_keys {
            return Ok(false);
        }
        tx.execute(
            "INSERT INTO hsm_pending (key_id, version, created_at) VALUES (?1, ?2, ?3)",
            params![&key_id[..], version, created_at],
        )?;
        tx.commit()?;
        Ok(true)
    }

    /// Forgets a pending HSM-only key version (its token object was destroyed,
    /// or never made).
    pub fn end_hsm_only_key(&self, key_id: &[u8; 16], version: u32) -> Result<(), StoreError> {
        may_block();
        self.conn.execute(
            "DELETE FROM hsm_pending WHERE key_id = ?1 AND version = ?2",
            params![&key_id[..], version],
        )?;
        Ok(())
    }

    #[cfg(any(test, feature = "internals"))]
    /// HSM-only key versions recorded as pending (see
    /// [`Keystore::begin_hsm_only_key`]).
    pub fn pending_hsm_only_keys(&self) -> Result<Vec<([u8; 16], u32)>, StoreError> {
        may_block();
        let mut stmt = self
            .conn
            .prepare("SELECT key_id, version FROM hsm_pending ORDER BY key_id, version")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, u32>(1)?)))?;
        rows.map(|r| {
            let (id, version) = r?;
            Ok((key_id_from(id)?, version))
        })
        .collect()
    }

    /// Keys stored plus HSM-only keys being created: what counts against
    /// `limits.max_keys`.
    pub fn count_keys_and_pending(&self) -> Result<u64, StoreError> {
        may_block();
        let n: i64 = self.conn.query_row(
            "SELECT (SELECT count(*) FROM keys) + (SELECT count(*) FROM hsm_pending WHERE reason = 'create')",
            [],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    #[cfg(any(test, feature = "internals"))]
    /// Stores a new key with its first version, atomically; the key's
    /// pending record, if any, goes in the same transaction (the service
    /// stores new keys with their tags: `Keystore::insert_new_key`).
    pub fn insert_key(
        &mut self,
        key: &KeyRecord,
        first: &WrappedVersion,
    ) -> Result<(), StoreError> {
        may_block();
        let tx = self.conn.transaction()?;
        tx.execute(
            &format!("INSERT INTO keys ({KEY_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"),
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
        tx.execute(
            "INSERT INTO key_versions (key_id, version, wrapped_key, created_at)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                &key.key_id[..],
                first.version,
                first.wrapped,
                key.created_at
            ],
        )?;
        tx.execute(
            "DELETE FROM hsm_pending WHERE key_id = ?1",
            params![&key.key_id[..]],
        )?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn row_to_key(r: &rusqlite::Row<'_>) -> rusqlite::Result<KeyRow> {
        Ok(KeyRow {
            id: r.get(0)?,
            created_at: r.get(1)?,
            description: r.get(2)?,
            state: r.get(3)?,
            origin: r.get(4)?,
            current_version: r.get(5)?,
            deletion_date: r.get(6)?,
            pending_window_days: r.get(7)?,
            rotation_period_days: r.get(8)?,
            next_rotation_at: r.get(9)?,
            on_demand_rotations: r.get(10)?,
            valid_to: r.get(11)?,
        })
    }

    pub(crate) fn key_from_row(row: KeyRow) -> Result<KeyRecord, StoreError> {
        Ok(KeyRecord {
            key_id: key_id_from(row.id)?,
            created_at: row.created_at,
            description: row.description,
            state: state_from(&row.state)?,
            origin: origin_from(&row.origin)?,
            current_version: row.current_version,
            deletion_date: row.deletion_date,
            pending_window_days: row.pending_window_days,
            rotation_period_days: row.rotation_period_days,
            next_rotation_at: row.next_rotation_at,
            on_demand_rotations: row.on_demand_rotations,
            valid_to: row.valid_to,
        })
    }

    #[cfg(any(test, feature = "internals"))]
    /// Runs `f` inside one read transaction: one shared lock (and one pair of
    /// file-lock calls) for many reads.
    pub fn read_batch<R>(&self, f: impl FnOnce(&Keystore) -> R) -> Result<R, StoreError> {
        may_block();
        let tx = self.conn.unchecked_transaction()?;
        let r = f(self);
        tx.commit()?;
        Ok(r)
    }

    /// A key's record, if it exists.
    pub fn get_key(&self, key_id: &[u8; 16]) -> Result<Option<KeyRecord>, StoreError> {
        may_block();
        read_key(&self.conn, key_id)
    }

    #[cfg(any(test, feature = "internals"))]
    /// All wrapped versions of a key, oldest first.
    pub fn get_versions(&self, key_id: &[u8; 16]) -> Result<Vec<WrappedVersion>, StoreError> {
        may_block();
        read_versions(&self.conn, key_id)
    }

    /// Adds a version to a stored key and makes it current (tests only:
    /// key rotation, which will do this for real, does not exist yet).
    #[cfg(test)]
    pub(crate) fn add_version(
        &mut self,
        key_id: &[u8; 16],
        version: &WrappedVersion,
    ) -> Result<(), StoreError> {
        may_block();
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO key_versions (key_id, version, wrapped_key, created_at)
             VALUES (?1, ?2, ?3, 0)",
            params![&key_id[..], version.version, version.wrapped],
        )?;
        tx.execute(
            "UPDATE keys SET current_version = ?2 WHERE key_id = ?1",
            params![&key_id[..], version.version],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Changes a stored key's state (tests only: the lifecycle operations
    /// that will do this come in a later issue).
    #[cfg(test)]
    pub(crate) fn set_state(&self, key_id: &[u8; 16], state: KeyState) -> Result<(), StoreError> {
        may_block();
        self.conn.execute(
            "UPDATE keys SET state = ?2 WHERE key_id = ?1",
            params![&key_id[..], state_name(state)],
        )?;
        Ok(())
    }

    /// Up to `limit` keys with ids greater than `after`, in id order.
    pub fn list_keys(
        &self,
        after: Option<&[u8; 16]>,
        limit: u32,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        may_block();
        let after: &[u8] = after.map_or(&[], |a| &a[..]);
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM keys WHERE key_id > ?1 ORDER BY key_id LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![after, limit], Self::row_to_key)?;
        rows.map(|r| Self::key_from_row(r?)).collect()
    }

    #[cfg(any(test, feature = "internals"))]
    /// Encryptions reserved so far for an HSM-only key version (0 if none):
    /// an upper bound of the encryptions it has done.
    pub fn usage_reserved(&self, key_id: &[u8; 16], version: u32) -> Result<u64, StoreError> {
        may_block();
        read_usage(&self.conn, key_id, version)
    }

    /// Records (durably, before they are used) that encryptions up to
    /// `reserved` may be done with an HSM-only key version. Monotonic: a
    /// lower value than the stored one changes nothing.
    pub fn reserve_usage(
        &self,
        key_id: &[u8; 16],
        version: u32,
        reserved: u64,
    ) -> Result<(), StoreError> {
        may_block();
        // Never lowers the stored value: a caller that read an older
        // reservation must not undo a newer one.
        self.conn.execute(
            "INSERT INTO hsm_usage (key_id, version, reserved) VALUES (?1, ?2, ?3)
             ON CONFLICT (key_id, version) DO UPDATE SET reserved = max(reserved, excluded.reserved)",
            params![&key_id[..], version, reserved as i64],
        )?;
        Ok(())
    }

    /// Replaces every wrapped backing key with `rewrap(key id, version,
    /// wrapped)` and records the new root of trust, in one transaction: a
    /// failure or a crash part-way leaves the store exactly as it was. The
    /// transaction is IMMEDIATE: it holds the write lock from the first read,
    /// so no key can be added (wrapped by the old root) that the loop would
    /// miss. Returns how many versions were rewrapped.
    pub fn rewrap_all<E: From<StoreError>>(
        &mut self,
        new_kind: &str,
        new_check: &[u8],
        mut rewrap: impl FnMut(&[u8; 16], u32, &[u8]) -> Result<Vec<u8>, E>,
        rewrap_seal_key: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
    ) -> Result<usize, E> {
        may_block();
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(StoreError::from)?;
        let all: Vec<(Vec<u8>, u32, Vec<u8>)> = {
            let mut stmt = tx
                .prepare("SELECT key_id, version, wrapped_key FROM key_versions")
                .map_err(StoreError::from)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(StoreError::from)?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)?
        };
        let mut moved = 0;
        for (id, version, wrapped) in &all {
            if wrapped.is_empty() {
                // An HSM-only key version: nothing wrapped to move.
                continue;
            }
            moved += 1;
            let key_id = key_id_from(id.clone())?;
            let new = rewrap(&key_id, *version, wrapped)?;
            tx.execute(
                "UPDATE key_versions SET wrapped_key = ?1 WHERE key_id = ?2 AND version = ?3",
                params![new, id, version],
            )
            .map_err(StoreError::from)?;
        }
        // The audit log's seal key is wrapped by the root too: moved in the
        // same transaction, or the new root could not unwrap it.
        let seal: Option<Vec<u8>> = tx
            .query_row(
                "SELECT value FROM meta WHERE name = 'audit_seal_key'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::from)?;
        if let Some(wrapped) = seal {
            let new = rewrap_seal_key(&wrapped)?;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE name = 'audit_seal_key'",
                params![new],
            )
            .map_err(StoreError::from)?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('root_kind', ?1)",
            params![new_kind.as_bytes()],
        )
        .map_err(StoreError::from)?;
        tx.execute(
            "INSERT OR REPLACE INTO meta (name, value) VALUES ('root_check', ?1)",
            params![new_check],
        )
        .map_err(StoreError::from)?;
        tx.commit().map_err(StoreError::from)?;
        Ok(moved)
    }
}

/// A `keys` row as read, before its fields are checked.
pub(crate) struct KeyRow {
    id: Vec<u8>,
    created_at: i64,
    description: String,
    state: String,
    origin: String,
    current_version: u32,
    deletion_date: Option<i64>,
    pending_window_days: Option<u32>,
    rotation_period_days: Option<u32>,
    next_rotation_at: Option<i64>,
    on_demand_rotations: u32,
    valid_to: Option<i64>,
}

fn read_key(conn: &Connection, key_id: &[u8; 16]) -> Result<Option<KeyRecord>, StoreError> {
    let row = conn
        .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE key_id = ?1"))?
        .query_row(params![&key_id[..]], Keystore::row_to_key)
        .optional()?;
    row.map(Keystore::key_from_row).transpose()
}

fn read_versions(conn: &Connection, key_id: &[u8; 16]) -> Result<Vec<WrappedVersion>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT version, wrapped_key FROM key_versions WHERE key_id = ?1 ORDER BY version",
    )?;
    let rows = stmt.query_map(params![&key_id[..]], |r| {
        Ok(WrappedVersion {
            version: r.get(0)?,
            wrapped: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn read_usage(conn: &Connection, key_id: &[u8; 16], version: u32) -> Result<u64, StoreError> {
    let n: Option<i64> = conn
        .prepare_cached("SELECT reserved FROM hsm_usage WHERE key_id = ?1 AND version = ?2")?
        .query_row(params![&key_id[..], version], |r| r.get(0))
        .optional()?;
    Ok(n.unwrap_or(0) as u64)
}

impl KeySource for StoreReader {
    fn read_keys(
        &self,
        ids: &[[u8; 16]],
    ) -> Result<Vec<Result<Option<StoredKey>, StoreError>>, StoreError> {
        self.read_batch(|r| ids.iter().map(|id| r.read_stored(id)).collect())
    }
}

impl StoreReader {
    fn read_stored(&self, id: &[u8; 16]) -> Result<Option<StoredKey>, StoreError> {
        let Some(record) = self.get_key(id)? else {
            // Only on a miss: a deleted key says so.
            return if lifecycle::was_deleted(&self.conn, id)? {
                Err(StoreError::KeyDeleted)
            } else {
                Ok(None)
            };
        };
        let versions = self.get_versions(id)?;
        let usage = if record.origin == Origin::Hsm {
            versions
                .iter()
                .map(|v| self.usage_reserved(id, v.version))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let policy = access::read_policy(&self.conn, id)?;
        let grants = access::read_grants(&self.conn, id)?;
        let aliases = aliases::names_of(&self.conn, id)?;
        Ok(Some(StoredKey {
            record,
            versions,
            usage,
            policy,
            grants,
            aliases,
        }))
    }

    /// Runs `f` inside one read transaction: one shared lock (and one pair
    /// of file-lock calls) for many reads. The key loader reads a whole
    /// batch of missed keys this way.
    pub fn read_batch<R>(&self, f: impl FnOnce(&StoreReader) -> R) -> Result<R, StoreError> {
        may_block();
        let tx = self.conn.unchecked_transaction()?;
        let r = f(self);
        tx.commit()?;
        Ok(r)
    }

    /// A key's record, if it exists.
    pub fn get_key(&self, key_id: &[u8; 16]) -> Result<Option<KeyRecord>, StoreError> {
        may_block();
        read_key(&self.conn, key_id)
    }

    /// All wrapped versions of a key, oldest first.
    pub fn get_versions(&self, key_id: &[u8; 16]) -> Result<Vec<WrappedVersion>, StoreError> {
        may_block();
        read_versions(&self.conn, key_id)
    }

    /// Encryptions reserved so far for an HSM-only key version (0 if none).
    pub fn usage_reserved(&self, key_id: &[u8; 16], version: u32) -> Result<u64, StoreError> {
        may_block();
        read_usage(&self.conn, key_id, version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn rec(id: u8) -> KeyRecord {
        KeyRecord {
            key_id: [id; 16],
            created_at: 1_700_000_000,
            description: format!("key {id}"),
            state: KeyState::Enabled,
            origin: Origin::Kmsd,
            current_version: 1,
            ..Default::default()
        }
    }

    #[test]
    fn keys_round_trip_and_list_in_order() {
        let mut s = Keystore::open_in_memory().unwrap();
        for id in [3u8, 1, 2] {
            let v = WrappedVersion {
                version: 1,
                wrapped: vec![id; 40],
            };
            s.insert_key(&rec(id), &v).unwrap();
        }
        assert_eq!(s.count_keys().unwrap(), 3);
        assert_eq!(s.get_key(&[2; 16]).unwrap(), Some(rec(2)));
        assert_eq!(s.get_key(&[9; 16]).unwrap(), None);
        assert_eq!(s.get_versions(&[3; 16]).unwrap()[0].wrapped, vec![3; 40]);
        let page = s.list_keys(None, 2).unwrap();
        assert_eq!(page.iter().map(|k| k.key_id[0]).collect::<Vec<_>>(), [1, 2]);
        let rest = s.list_keys(Some(&[2; 16]), 2).unwrap();
        assert_eq!(rest.iter().map(|k| k.key_id[0]).collect::<Vec<_>>(), [3]);
    }

    #[test]
    fn duplicate_key_id_is_refused_and_nothing_is_half_written() {
        let mut s = Keystore::open_in_memory().unwrap();
        let v = WrappedVersion {
            version: 1,
            wrapped: vec![1; 40],
        };
        s.insert_key(&rec(1), &v).unwrap();
        assert!(s.insert_key(&rec(1), &v).is_err());
        assert_eq!(s.get_versions(&[1; 16]).unwrap().len(), 1);
    }

    #[test]
    fn rewrap_all_keeps_writers_out_from_its_first_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Keystore::open(dir.path()).unwrap();
        let v = WrappedVersion {
            version: 1,
            wrapped: vec![1; 40],
        };
        s.insert_key(&rec(1), &v).unwrap();
        let other = Connection::open(dir.path().join(DB_FILE)).unwrap();
        other.busy_timeout(std::time::Duration::ZERO).unwrap();
        let mut writer_got_in = None;
        s.rewrap_all::<StoreError>("file", b"check", |_, _, wrapped| {
            // A daemon creating a key now would wrap it with the old root.
            writer_got_in = Some(other.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_ok());
            Ok(wrapped.to_vec())
        }, |w| Ok(w.to_vec()))
        .unwrap();
        assert_eq!(writer_got_in, Some(false), "a writer got in mid-migration");
    }

    #[test]
    fn usage_reservations_only_go_up() {
        let s = Keystore::open_in_memory().unwrap();
        assert_eq!(s.usage_reserved(&[1; 16], 1).unwrap(), 0);
        s.reserve_usage(&[1; 16], 1, 200).unwrap();
        // A stale writer (an older load of the key) cannot lower it.
        s.reserve_usage(&[1; 16], 1, 100).unwrap();
        assert_eq!(s.usage_reserved(&[1; 16], 1).unwrap(), 200);
        s.reserve_usage(&[1; 16], 1, 300).unwrap();
        assert_eq!(s.usage_reserved(&[1; 16], 1).unwrap(), 300);
        assert_eq!(s.usage_reserved(&[1; 16], 2).unwrap(), 0);
    }

    #[test]
    fn pending_hsm_keys_count_against_the_limit_until_stored() {
        let mut s = Keystore::open_in_memory().unwrap();
        let v = WrappedVersion {
            version: 1,
            wrapped: Vec::new(),
        };
        s.insert_key(&rec(1), &v).unwrap();
        assert!(s.begin_hsm_only_key(&[2; 16], 1, 0, 3).unwrap());
        assert_eq!(s.count_keys_and_pending().unwrap(), 2);
        assert!(s.begin_hsm_only_key(&[3; 16], 1, 0, 3).unwrap());
        assert!(!s.begin_hsm_only_key(&[4; 16], 1, 0, 3).unwrap(), "full");
        assert_eq!(
            s.pending_hsm_only_keys().unwrap(),
            [([2; 16], 1), ([3; 16], 1)]
        );
        // Storing the key ends its pending record in the same transaction.
        s.insert_key(&rec(2), &v).unwrap();
        assert_eq!(s.pending_hsm_only_keys().unwrap(), [([3; 16], 1)]);
        s.end_hsm_only_key(&[3; 16], 1).unwrap();
        assert!(s.pending_hsm_only_keys().unwrap().is_empty());
        assert_eq!(s.count_keys_and_pending().unwrap(), 2);
    }

    #[test]
    fn root_binding_detects_another_root() {
        let s = Keystore::open_in_memory().unwrap();
        s.bind_root("file", b"check-a").unwrap();
        s.bind_root("file", b"check-a").unwrap();
        assert!(matches!(
            s.bind_root("file", b"check-b"),
            Err(StoreError::RootMismatch { .. })
        ));
    }

    #[test]
    fn readers_see_committed_writes_and_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let on_disk = Keystore::open(dir.path()).unwrap();
        for mut s in [on_disk, Keystore::open_in_memory().unwrap()] {
            let reader = s.open_reader().unwrap();
            assert_eq!(reader.get_key(&[1; 16]).unwrap(), None);
            let v = WrappedVersion {
                version: 1,
                wrapped: vec![1; 40],
            };
            s.insert_key(&rec(1), &v).unwrap();
            let (key, versions) = reader
                .read_batch(|r| (r.get_key(&[1; 16]), r.get_versions(&[1; 16])))
                .unwrap();
            assert_eq!(key.unwrap(), Some(rec(1)));
            assert_eq!(versions.unwrap(), [v]);
            assert_eq!(reader.usage_reserved(&[1; 16], 1).unwrap(), 0);
            // Read-only: the loader cannot change the store.
            assert!(reader.conn.execute("DELETE FROM keys", []).is_err());
            // A write during a reader's transaction succeeds (in WAL mode
            // at once; in memory once the read ends: it waits, it does not
            // fail).
            std::thread::scope(|t| {
                let (writer, read) = reader
                    .read_batch(|r| {
                        let w = t.spawn(move || s.reserve_usage(&[1; 16], 1, 5));
                        (w, r.usage_reserved(&[1; 16], 1))
                    })
                    .unwrap();
                assert!(read.is_ok(), "{read:?}");
                writer.join().unwrap().unwrap();
            });
            assert_eq!(reader.usage_reserved(&[1; 16], 1).unwrap(), 5);
        }
        // Two in-memory stores are two databases.
        let (a, b) = (
            Keystore::open_in_memory().unwrap(),
            Keystore::open_in_memory().unwrap(),
        );
        a.reserve_usage(&[1; 16], 1, 7).unwrap();
        assert_eq!(b.usage_reserved(&[1; 16], 1).unwrap(), 0);
    }

    #[test]
    fn store_calls_on_an_io_thread_panic_in_debug_builds() {
        let s = Keystore::open_in_memory().unwrap();
        let reader = s.open_reader().unwrap();
        let on_io = |f: Box<dyn FnOnce() + Send>| {
            std::thread::spawn(move || {
                crate::thread_role::enter_io();
                f();
            })
            .join()
            .is_err()
        };
        let panicked = on_io(Box::new(move || {
            let _ = reader.get_key(&[1; 16]);
        }));
        assert_eq!(panicked, cfg!(debug_assertions));
        let panicked = on_io(Box::new(move || {
            let _ = s.count_keys();
        }));
        assert_eq!(panicked, cfg!(debug_assertions));
    }
}
