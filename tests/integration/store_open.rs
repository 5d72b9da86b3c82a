//! The real kmsd binary on the stores it may find at start: truncated,
//! overwritten in the middle, not a database, empty, written by a newer
//! kmsd (each refused: a non-zero exit and one line on stderr naming the
//! file and saying what to do, never an empty keystore served), and a
//! version 1 store (upgraded, every key and ciphertext intact).

use crate::support::Daemon;
use rusqlite::{params, Connection, OpenFlags};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The version 1 schema, as kmsd 0.1 created it (src/keystore/schema.rs,
/// `V1`), copied so that this test keeps building the old store however the
/// code changes.
const V1: &str = "
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE keys (
    key_id          BLOB PRIMARY KEY CHECK (length(key_id) = 16),
    created_at      INTEGER NOT NULL,
    description     TEXT NOT NULL,
    state           TEXT NOT NULL,
    origin          TEXT NOT NULL,
    current_version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE key_versions (
    key_id      BLOB NOT NULL REFERENCES keys(key_id),
    version     INTEGER NOT NULL,
    wrapped_key BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
) WITHOUT ROWID;
CREATE TABLE hsm_usage (
    key_id BLOB NOT NULL, version INTEGER NOT NULL, reserved INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
) WITHOUT ROWID;
CREATE TABLE hsm_pending (
    key_id BLOB NOT NULL, version INTEGER NOT NULL, created_at INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
) WITHOUT ROWID;
";

/// Ciphertexts by key id (each key's id is its plaintext).
type Blobs = Vec<(String, Vec<u8>)>;

/// A data directory holding a store made by the real daemon: `keys` keys
/// (in batches), one ciphertext under each of the first three, stopped
/// and checkpointed (keys.db holds everything). Returns the daemon (stopped),
/// its key ids and the ciphertexts.
fn store_with_keys(keys: usize) -> (Daemon, Vec<String>, Blobs) {
    let mut d = Daemon::start(&[]);
    let mut c = d.client();
    let mut ids = Vec::new();
    while ids.len() < keys {
        let n = (keys - ids.len()).min(100);
        let ops = (0..n)
            .map(|_| {
                kms_proto::Operation::CreateKey(kms_proto::CreateKey {
                    description: "a key whose row takes some room in its page, so that \
                                  the store spans many pages",
                    ..Default::default()
                })
            })
            .collect();
        for o in c.batch(ops).unwrap() {
            match o.unwrap() {
                kms_proto::Output::CreateKey(m) => ids.push(m.key_id),
                other => panic!("{other:?}"),
            }
        }
    }
    let blobs = ids[..3]
        .iter()
        .map(|id| {
            let b = c.encrypt(id, id.as_bytes(), &[("k", "v")]).unwrap();
            (id.clone(), b.ciphertext_blob)
        })
        .collect();
    drop(c);
    d.stop();
    // Everything into keys.db (a stop need not checkpoint the log), so
    // that damage to the file cannot hide behind pages in the log.
    let conn = Connection::open(d.data_dir.join("keys.db")).unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    conn.close().unwrap();
    (d, ids, blobs)
}

/// A copy of `from` (keys.db and root.key) in a new temporary directory.
fn copy_data_dir(from: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("kmsd-damaged-")
        .tempdir()
        .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for name in ["keys.db", "root.key"] {
        std::fs::copy(from.join(name), data.join(name)).unwrap();
    }
    assert!(
        !from.join("keys.db-wal").exists()
            || std::fs::metadata(from.join("keys.db-wal")).unwrap().len() == 0,
        "the checkpoint left everything in keys.db"
    );
    (dir, data)
}

/// Starts the real binary on `data_dir` (logging errors only, so that its
/// stderr holds exactly what an operator is told) and expects it to exit
/// non-zero without ever accepting a connection. Returns its stderr.
fn start_must_fail(dir: &Path, data_dir: &Path) -> String {
    start_must_fail_with(dir, data_dir, &[])
}

/// [`start_must_fail`] with more arguments.
pub fn start_must_fail_with(dir: &Path, data_dir: &Path, args: &[&str]) -> String {
    let socket = dir.join("kmsd.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kmsd"))
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env("KMSD_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "kmsd served (from {}) where it must not",
                data_dir.display()
            );
        }
        assert!(Instant::now() < deadline, "kmsd neither served nor exited");
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "kmsd exited 0; stderr:\n{stderr}");
    stderr
}

/// One line, naming `<data_dir>/keys.db`, with `words` in it.
fn assert_one_line(stderr: &str, data_dir: &Path, words: &[&str]) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr, got:\n{stderr}");
    let line = lines[0];
    assert!(line.starts_with("kmsd: "), "{line}");
    assert!(
        line.contains(&data_dir.join("keys.db").display().to_string()),
        "the line names the file: {line}"
    );
    for w in words {
        assert!(line.contains(w), "{w:?} missing from: {line}");
    }
}

fn bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn a_damaged_store_stops_start_up_with_one_line_and_is_left_alone() {
    let (d, _, _) = store_with_keys(400);
    let len = std::fs::metadata(d.data_dir.join("keys.db")).unwrap().len();
    assert!(len >= 64 * 1024, "the store spans many pages ({len} bytes)");
    type Damage = fn(&Path, u64);
    let damages: [(&str, Damage); 4] = [
        ("truncated to half", |p, len| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .unwrap()
                .set_len(len / 2)
                .unwrap()
        }),
        ("garbage in the middle", |p, len| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            // Whole pages of garbage in the middle: headers intact, the
            // b-trees broken.
            f.write_all_at(&vec![0x5A; 4 * 4096], len / 2 / 4096 * 4096)
                .unwrap();
        }),
        ("not a database", |p, len| {
            std::fs::write(p, b"this is not a database\n".repeat(len as usize / 23)).unwrap()
        }),
        ("emptied", |p, _| std::fs::write(p, b"").unwrap()),
    ];
    for (what, damage) in damages {
        let (dir, data) = copy_data_dir(&d.data_dir);
        let db = data.join("keys.db");
        damage(&db, len);
        let before = bytes(&db);
        let stderr = start_must_fail(dir.path(), &data);
        assert_one_line(
            &stderr,
            &data,
            &["restore keys.db from a backup", "will not serve"],
        );
        assert!(
            bytes(&db) == before,
            "{what}: the failed start changed keys.db"
        );
    }
}

#[test]
fn a_store_from_a_newer_kmsd_is_refused_in_one_line() {
    let (d, _, _) = store_with_keys(3);
    let (dir, data) = copy_data_dir(&d.data_dir);
    Connection::open(data.join("keys.db"))
        .unwrap()
        .execute(
            "UPDATE meta SET value = ?1 WHERE name = 'schema_version'",
            params![b"99".to_vec()],
        )
        .unwrap();
    let stderr = start_must_fail(dir.path(), &data);
    assert_one_line(
        &stderr,
        &data,
        &["schema version 99", "newer", "run the kmsd that wrote it"],
    );
}

/// Rewrites the store in `data_dir` as kmsd 0.1 wrote it (schema version 1,
/// the same keys, versions and root binding), in WAL mode as kmsd 0.1 kept
/// it, with everything in the main file.
pub fn downgrade_to_v1(data_dir: &Path) {
    let db = data_dir.join("keys.db");
    let v1 = data_dir.join("keys-v1.db");
    let conn = Connection::open(&v1).unwrap();
    conn.execute_batch(V1).unwrap();
    conn.execute("ATTACH DATABASE ?1 AS new", params![db.to_str().unwrap()])
        .unwrap();
    conn.execute_batch(
        "INSERT INTO meta SELECT name, value FROM new.meta WHERE name <> 'schema_version';
         INSERT INTO meta VALUES ('schema_version', CAST('1' AS BLOB));
         INSERT INTO keys SELECT key_id, created_at, description, state, origin, current_version
             FROM new.keys;
         INSERT INTO key_versions SELECT key_id, version, wrapped_key, created_at
             FROM new.key_versions;
         DETACH DATABASE new;",
    )
    .unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    // Closing the last connection checkpoints the log into the file and
    // removes it.
    conn.close().unwrap();
    assert!(!data_dir.join("keys-v1.db-wal").exists());
    for f in ["keys.db-wal", "keys.db-shm"] {
        let _ = std::fs::remove_file(data_dir.join(f));
    }
    std::fs::rename(&v1, &db).unwrap();
}

/// The schema version and whether the v2 columns exist, read without
/// writing.
/// The schema version this kmsd writes, as the store spells it.
pub fn current_schema() -> String {
    kmsd::keystore::schema::SCHEMA_VERSION.to_string()
}

fn schema_of(db: &Path) -> (String, bool) {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let v: Vec<u8> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let v2: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('keys') WHERE name = 'deletion_date'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (String::from_utf8(v).unwrap(), v2 == 1)
}

#[test]
fn a_v1_store_is_upgraded_by_the_daemon_with_keys_and_ciphertexts_intact() {
    let (mut d, ids, blobs) = store_with_keys(50);
    downgrade_to_v1(&d.data_dir);
    let db = d.data_dir.join("keys.db");
    assert_eq!(schema_of(&db), ("1".to_owned(), false));
    d.restart();
    assert_eq!(schema_of(&db), (current_schema(), true));
    // Keys from before access control got the administrators' default
    // policy at that start.
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let without: i64 = conn
        .query_row(
            "SELECT count(*) FROM keys WHERE key_id NOT IN (SELECT key_id FROM key_policies)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(without, 0, "every key has a policy");
    drop(conn);
    let mut c = d.client();
    let mut listed = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = c.list_keys(1000, marker.as_deref()).unwrap();
        listed.extend(page.keys.into_iter().map(|k| k.key_id));
        if !page.truncated {
            break;
        }
        marker = page.next_marker;
    }
    listed.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(listed, want, "every key of the v1 store is there");
    for id in &ids[..5] {
        let m = c.describe_key(id).unwrap();
        assert_eq!(m.key_state, kms_proto::KeyState::Enabled);
        assert_eq!(m.deletion_date, None);
    }
    for (id, blob) in &blobs {
        let out = c.decrypt(blob, None, &[("k", "v")]).unwrap();
        assert_eq!(out.plaintext.expose(), id.as_bytes());
    }
    // And the upgraded store keeps working: a new key, a new ciphertext.
    let k = c.create_key("after the upgrade").unwrap();
    let b = c.encrypt(&k.key_id, b"new", &[]).unwrap();
    drop(c);
    d.restart();
    let mut c = d.client();
    assert_eq!(
        c.decrypt(&b.ciphertext_blob, None, &[])
            .unwrap()
            .plaintext
            .expose(),
        b"new"
    );
}
