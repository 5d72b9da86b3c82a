//! Opening the file store so that kmsd never serves from a store it cannot
//! trust: a new keystore appears whole or not at all, and a damaged,
//! truncated, foreign or too new one stops start-up with one line that
//! names the file and says what to do.
//!
//! Why creation is atomic: SQLite creates an empty `keys.db` when it opens a
//! path that does not exist, and writes its header later. A crash in
//! between (or a file emptied by the filesystem) would leave an empty file
//! that looks exactly like a new database, and kmsd would serve an empty
//! keystore over the ruins of a full one. So a new store is built under a
//! temporary name (schema, fsync), then linked to `keys.db` and the
//! directory fsynced; from then on `keys.db` always holds a whole keystore,
//! and an existing `keys.db` that is empty, headerless or without a schema
//! version is damage, never "new". `keys.db` missing while `keys.db-wal`
//! is there is damage too (the store was removed under its log).
//!
//! docs/lifecycle.md, "Durability", describes what is guaranteed and how
//! the crash test checks it.

use super::{schema, Keystore, Source, StoreError, DB_FILE};
use rusqlite::{Connection, OpenFlags};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What an operator is told to do with a damaged keystore.
const RESTORE: &str = "kmsd will not serve from it: stop kmsd, restore keys.db from a backup \
     (docs/lifecycle.md, \"Durability\"), or move keys.db, keys.db-wal and keys.db-shm aside \
     to start with an empty keystore";

impl Keystore {
    /// Opens `<data_dir>/keys.db`, creating a new keystore atomically if
    /// there is none. Every failure is one line naming the file
    /// ([`StoreError::Unusable`]).
    pub(super) fn open_file(data_dir: &Path) -> Result<Keystore, StoreError> {
        let path = data_dir.join(DB_FILE);
        let unusable = |problem: String, hint: &'static str| StoreError::Unusable {
            path: path.clone(),
            problem,
            hint,
        };
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let wal = wal_of(&path);
                if wal.exists() {
                    return Err(unusable(
                        format!(
                            "is missing, but its write-ahead log {} is there (the keystore was \
                             removed or lost)",
                            wal.display()
                        ),
                        RESTORE,
                    ));
                }
                create(data_dir, &path).map_err(|e| {
                    unusable(
                        format!("cannot be created: {}", one_line(&e)),
                        "check that the data directory is writable and has free space",
                    )
                })?;
            }
            Err(e) => {
                return Err(unusable(
                    format!("cannot be read: {e}"),
                    "check the data directory's permissions",
                ))
            }
        }
        // Never CREATE here: a keys.db that vanished since the check above
        // must not come back empty.
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(&path, StoreError::Sqlite(e)))?;
        Keystore::init(conn, Source::File(path.clone()), true).map_err(|e| classify(&path, e))
    }
}

/// `keys.db` -> `keys.db-wal`.
fn wal_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Builds a new keystore at a temporary name and links it to `path`: the
/// schema is committed and the file fsynced before the link, and the
/// directory fsynced after it. If another opener created `path` first,
/// its store is kept.
fn create(dir: &Path, path: &Path) -> Result<(), StoreError> {
    let mut suffix = [0u8; 8];
    crate::crypto::rng::fill(&mut suffix);
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(
        ".{DB_FILE}.new.{}.{suffix}",
        std::process::id()
    ));
    let built = build(&tmp);
    let linked = built.and_then(|()| {
        match fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            // Another opener won the race: its store is whole too.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(StoreError::Corrupt(format!("linking {}: {e}", path.display()))),
        }
    });
    // The temporary name goes in every case (a stray one is harmless).
    let _ = fs::remove_file(&tmp);
    linked?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::Corrupt(format!("syncing {}: {e}", dir.display())))
}

/// A new keystore at `tmp`: the schema in one transaction, in rollback
/// journal mode (so no WAL file is left under the temporary name), fsynced.
fn build(tmp: &Path) -> Result<(), StoreError> {
    let mut conn = Connection::open_with_flags(
        tmp,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    schema::migrate(&mut conn)?;
    conn.close().map_err(|(_, e)| e)?;
    fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Corrupt(format!("syncing {}: {e}", tmp.display())))
}

/// The one-line refusal for a failure opening an existing store.
fn classify(path: &Path, e: StoreError) -> StoreError {
    let unusable = |problem: String, hint: &'static str| StoreError::Unusable {
        path: path.to_owned(),
        problem,
        hint,
    };
    match e {
        e @ StoreError::Unusable { .. } => e,
        StoreError::TooNew { found, supported } => unusable(
            format!("has schema version {found}, newer than this kmsd supports ({supported})"),
            "run the kmsd that wrote it, or restore a backup made by this version",
        ),
        StoreError::Corrupt(what) => unusable(format!("is damaged: {}", one_line(&what)), RESTORE),
        StoreError::Sqlite(e) => match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
                unusable(format!("is damaged: {}", sqlite_words(&e)), RESTORE)
            }
            Some(rusqlite::ErrorCode::NotADatabase) => unusable(
                format!("is not a database ({})", sqlite_words(&e)),
                RESTORE,
            ),
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                unusable(
                    format!("is locked by another process ({})", sqlite_words(&e)),
                    "stop the other process using it (e.g. an sqlite3 shell) and start again",
                )
            }
            _ => unusable(
                format!("cannot be opened: {}", sqlite_words(&e)),
                "check the data directory's permissions and free space",
            ),
        },
        other => other,
    }
}

/// SQLite's own words for a failure, once (rusqlite's Display repeats the
/// message with the code's description).
fn sqlite_words(e: &rusqlite::Error) -> String {
    match e {
        rusqlite::Error::SqliteFailure(_, Some(msg)) => one_line(msg),
        rusqlite::Error::SqliteFailure(code, None) => one_line(&code.to_string()),
        other => one_line(&other.to_string()),
    }
}

/// `s` on one line: the first line, and how many more there were (an
/// integrity check lists every damaged page).
pub(super) fn one_line(s: &dyn std::fmt::Display) -> String {
    let s = s.to_string();
    // SQLite's integrity check heads its list with the database's name.
    let mut lines = s
        .lines()
        .map(str::trim)
        .filter(|l| !(l.is_empty() || (l.starts_with("***") && l.ends_with("***"))));
    let first = lines.next().unwrap_or("").to_owned();
    match lines.count() {
        0 => first,
        n => format!("{first} (and {n} more)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(dir: &Path) -> String {
        match Keystore::open(dir) {
            Ok(_) => panic!("opened"),
            Err(e) => e.to_string(),
        }
    }

    fn a_store_with_keys(dir: &Path) {
        let mut s = Keystore::open(dir).unwrap();
        for i in 0..200u8 {
            let rec = super::super::KeyRecord {
                key_id: [i; 16],
                description: "x".repeat(200),
                current_version: 1,
                ..Default::default()
            };
            let v = super::super::WrappedVersion {
                version: 1,
                wrapped: vec![i; 40],
            };
            s.insert_key(&rec, &v).unwrap();
        }
        // Everything into the main file, as after a clean stop.
        s.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
    }

    fn assert_one_line_naming(shown: &str, dir: &Path, words: &str) {
        assert!(!shown.contains('\n'), "{shown}");
        assert!(
            shown.contains(&dir.join(DB_FILE).display().to_string()),
            "{shown}"
        );
        assert!(shown.contains(words), "{shown}");
    }

    #[test]
    fn a_new_store_is_created_whole_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        drop(Keystore::open(dir.path()).unwrap());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".new."))
            .collect();
        assert!(names.is_empty(), "temporary files left: {names:?}");
        let s = Keystore::open(dir.path()).unwrap();
        assert_eq!(s.schema_version().unwrap(), schema::SCHEMA_VERSION);
    }

    #[test]
    fn an_empty_keys_db_is_damage_not_a_new_store() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(DB_FILE), b"").unwrap();
        let shown = shown(dir.path());
        assert_one_line_naming(&shown, dir.path(), "restore keys.db from a backup");
        assert_eq!(fs::metadata(dir.path().join(DB_FILE)).unwrap().len(), 0);
    }

    #[test]
    fn a_truncated_or_overwritten_store_is_refused_in_one_line() {
        for damage in ["half", "garbage", "not-a-database"] {
            let dir = tempfile::tempdir().unwrap();
            a_store_with_keys(dir.path());
            let path = dir.path().join(DB_FILE);
            let len = fs::metadata(&path).unwrap().len();
            match damage {
                "half" => fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap(),
                "garbage" => {
                    use std::os::unix::fs::FileExt;
                    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
                    f.write_all_at(&vec![0xA5; 3 * 4096], len / 2 / 4096 * 4096)
                        .unwrap();
                }
                _ => fs::write(&path, vec![b'x'; 8192]).unwrap(),
            }
            let shown = shown(dir.path());
            assert_one_line_naming(&shown, dir.path(), "restore keys.db from a backup");
        }
    }

    #[test]
    fn a_missing_store_beside_its_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("keys.db-wal"), b"log").unwrap();
        let shown = shown(dir.path());
        assert_one_line_naming(&shown, dir.path(), "write-ahead log");
        assert!(!dir.path().join(DB_FILE).exists());
    }

    #[test]
    fn a_newer_store_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        drop(Keystore::open(dir.path()).unwrap());
        Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .execute(
                "UPDATE meta SET value = '7' WHERE name = 'schema_version'",
                [],
            )
            .unwrap();
        let shown = shown(dir.path());
        assert_one_line_naming(&shown, dir.path(), "schema version 7, newer");
    }

    #[test]
    fn one_line_counts_the_rest() {
        assert_eq!(one_line(&"a\nb\n\nc"), "a (and 2 more)");
        assert_eq!(one_line(&"only"), "only");
        assert_eq!(
            one_line(&"*** in database main ***\nPage 5: bad\nPage 6: bad"),
            "Page 5: bad (and 1 more)"
        );
    }
}
