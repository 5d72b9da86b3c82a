//! kill -9 at random moments: a real kmsd under several client threads
//! (CreateKey, CreateAlias, RotateKeyOnDemand, DisableKey,
//! ScheduleKeyDeletion, Encrypt) is killed with SIGKILL again and again.
//! A client records a change as acknowledged only once its answer
//! arrived. After every kill, before the restart, the test opens keys.db
//! read-only and asks SQLite's `PRAGMA integrity_check`; after the restart
//! every acknowledged change must be there: the key exists, each alias
//! names its key, the key has at least 1 + its acknowledged rotations
//! versions, its state is the acknowledged one or a later one
//! (Enabled < Disabled < PendingDeletion: the clients only move keys
//! forward), and every ciphertext made before the kill decrypts to its
//! plaintext (deletion windows are 30 days and the clock does not move, so
//! no key is deleted).
//!
//! Also: kills during the start-up of a daemon on a version 1 store (the
//! schema upgrade runs there), each leaving the store whole at version 1
//! or the current version, and the final start upgraded with every key and
//! ciphertext intact.
//!
//! The RNG is seeded; the seed is printed at the start and in every
//! failure (`KMSD_CRASH_SEED=<n>` repeats a run's choices; the kill times
//! depend on the machine too).

use crate::life::call;
use crate::support::Daemon;
use kms_proto::client::{Client, ClientError};
use kms_proto::*;
use parking_lot::{Condvar, Mutex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Kills in the main test.
const KILLS: usize = 25;
/// Client threads.
const CLIENTS: usize = 4;
/// Keys each client makes at most.
const KEYS_PER_CLIENT: usize = 24;

fn seed() -> u64 {
    let seed = std::env::var("KMSD_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let mut b = [0u8; 8];
            kmsd::crypto::rng::fill(&mut b);
            u64::from_le_bytes(b)
        });
    eprintln!("crash test seed: KMSD_CRASH_SEED={seed}");
    seed
}

/// How far along its lifecycle a key is (clients only move keys forward).
fn rank(s: KeyState) -> u8 {
    match s {
        KeyState::Enabled => 0,
        KeyState::Disabled => 1,
        KeyState::PendingDeletion => 2,
        other => panic!("no client makes a key {other:?}"),
    }
}

/// What one key's acknowledged changes promise.
#[derive(Clone, Debug)]
struct KeyAck {
    state: KeyState,
    rotations: u32,
}

/// Everything acknowledged so far.
#[derive(Clone, Debug, Default)]
struct Acked {
    keys: HashMap<String, KeyAck>,
    /// Alias name -> key id.
    aliases: HashMap<String, String>,
    /// (key id, ciphertext, plaintext).
    blobs: Vec<(String, Vec<u8>, Vec<u8>)>,
}

/// A client thread's keys: `crypto` keys stay Enabled (ciphertexts and
/// rotations), the others are disabled and scheduled for deletion.
struct ClientKeys {
    crypto: Vec<String>,
    lifecycle: Vec<String>,
}

/// The outcome of one request: acknowledged, refused, or cut off by the
/// kill (then nothing is known).
enum Sent<T> {
    Acked(T),
    Refused(ErrorKind, String),
    Cut,
}

fn send(c: &mut Client, op: Operation<'_>) -> Sent<Output> {
    match c.call(op) {
        Ok(o) => Sent::Acked(o),
        Err(ClientError::Kms(e)) => Sent::Refused(e.kind, e.message),
        Err(ClientError::Io(_)) => Sent::Cut,
    }
}

/// Coordination between the killer and the clients.
struct Shared {
    acked: Mutex<Acked>,
    /// (epoch: bumped when the daemon is up again, clients parked).
    gate: Mutex<(u64, usize)>,
    moved: Condvar,
    stop: AtomicBool,
    /// Refusals no client should get (a failure of the test).
    unexpected: Mutex<Vec<String>>,
}

impl Shared {
    /// A client found the daemon gone: park until the next epoch.
    /// Returns false when the test is over.
    fn park(&self, seen: &mut u64) -> bool {
        let mut g = self.gate.lock();
        g.1 += 1;
        self.moved.notify_all();
        while g.0 == *seen && !self.stop.load(Ordering::SeqCst) {
            self.moved.wait(&mut g);
        }
        g.1 -= 1;
        *seen = g.0;
        !self.stop.load(Ordering::SeqCst)
    }
}

/// One client thread: random changes until the test stops, parking at
/// each kill.
fn client(n: usize, seed: u64, socket: &Path, shared: &Shared) {
    let mut rng = StdRng::seed_from_u64(seed ^ (n as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut keys = ClientKeys {
        crypto: Vec::new(),
        lifecycle: Vec::new(),
    };
    let mut aliases = 0usize;
    let mut epoch = 0u64;
    'connect: loop {
        let Ok(mut c) = Client::connect(socket) else {
            if shared.park(&mut epoch) {
                continue 'connect;
            }
            return;
        };
        c.stream()
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let roll = rng.random_range(0..100);
            let made = keys.crypto.len() + keys.lifecycle.len();
            let outcome: Sent<()> = if made < 2 || (roll < 8 && made < KEYS_PER_CLIENT) {
                match send(&mut c, Operation::CreateKey(CreateKey::default())) {
                    Sent::Acked(Output::CreateKey(m)) => {
                        shared.acked.lock().keys.insert(
                            m.key_id.clone(),
                            KeyAck {
                                state: KeyState::Enabled,
                                rotations: 0,
                            },
                        );
                        if keys.crypto.len() <= keys.lifecycle.len() {
                            keys.crypto.push(m.key_id);
                        } else {
                            keys.lifecycle.push(m.key_id);
                        }
                        Sent::Acked(())
                    }
                    Sent::Acked(o) => panic!("{o:?}"),
                    Sent::Refused(k, m) => Sent::Refused(k, m),
                    Sent::Cut => Sent::Cut,
                }
            } else if roll < 22 {
                let all: Vec<&String> = keys.crypto.iter().chain(&keys.lifecycle).collect();
                let key = all[rng.random_range(0..all.len())].clone();
                aliases += 1;
                let name = format!("alias/crash-{n}-{aliases}");
                match send(
                    &mut c,
                    Operation::CreateAlias(CreateAlias {
                        alias_name: &name,
                        target_key_id: &key,
                    }),
                ) {
                    Sent::Acked(_) => {
                        shared.acked.lock().aliases.insert(name, key);
                        Sent::Acked(())
                    }
                    // A key pending deletion takes no alias (its deletion
                    // may have been applied but not acknowledged).
                    Sent::Refused(ErrorKind::KmsInvalidState, _) => Sent::Acked(()),
                    Sent::Refused(k, m) => Sent::Refused(k, m),
                    Sent::Cut => Sent::Cut,
                }
            } else if roll < 36 {
                let key = keys.crypto[rng.random_range(0..keys.crypto.len())].clone();
                match send(
                    &mut c,
                    Operation::RotateKeyOnDemand(RotateKeyOnDemand { key_id: &key }),
                ) {
                    Sent::Acked(_) => {
                        shared.acked.lock().keys.get_mut(&key).unwrap().rotations += 1;
                        Sent::Acked(())
                    }
                    Sent::Refused(k, m) => Sent::Refused(k, m),
                    Sent::Cut => Sent::Cut,
                }
            } else if roll < 50 && !keys.lifecycle.is_empty() {
                let key = keys.lifecycle[rng.random_range(0..keys.lifecycle.len())].clone();
                let (op, to) = if rng.random_bool(0.6) {
                    (
                        Operation::DisableKey(DisableKey { key_id: &key }),
                        KeyState::Disabled,
                    )
                } else {
                    (
                        Operation::ScheduleKeyDeletion(ScheduleKeyDeletion {
                            key_id: &key,
                            pending_window_in_days: Some(30),
                        }),
                        KeyState::PendingDeletion,
                    )
                };
                match send(&mut c, op) {
                    Sent::Acked(_) => {
                        let mut a = shared.acked.lock();
                        let k = a.keys.get_mut(&key).unwrap();
                        if rank(to) > rank(k.state) {
                            k.state = to;
                        }
                        Sent::Acked(())
                    }
                    // Disabling or scheduling a key pending deletion:
                    // refused, as AWS.
                    Sent::Refused(ErrorKind::KmsInvalidState, _) => Sent::Acked(()),
                    Sent::Refused(k, m) => Sent::Refused(k, m),
                    Sent::Cut => Sent::Cut,
                }
            } else {
                let key = keys.crypto[rng.random_range(0..keys.crypto.len())].clone();
                let mut pt = vec![0u8; rng.random_range(1..200)];
                rng.fill(&mut pt[..]);
                match send(
                    &mut c,
                    Operation::Encrypt(Encrypt {
                        key_id: &key,
                        plaintext: &pt,
                        context: vec![("crash", "test")],
                        ..Default::default()
                    }),
                ) {
                    Sent::Acked(Output::Encrypt(o)) => {
                        shared.acked.lock().blobs.push((key, o.ciphertext_blob, pt));
                        Sent::Acked(())
                    }
                    Sent::Acked(o) => panic!("{o:?}"),
                    Sent::Refused(k, m) => Sent::Refused(k, m),
                    Sent::Cut => Sent::Cut,
                }
            };
            match outcome {
                Sent::Acked(()) => {}
                Sent::Refused(k, m) => shared
                    .unexpected
                    .lock()
                    .push(format!("client {n}: {}: {m}", k.name())),
                Sent::Cut => {
                    if shared.park(&mut epoch) {
                        continue 'connect;
                    }
                    return;
                }
            }
        }
    }
}

/// `PRAGMA integrity_check` of the store, opened read-only (the daemon is
/// dead: its WAL and shared-memory files are as the kill left them).
fn integrity(db: &Path) -> Vec<String> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap();
    let mut stmt = conn.prepare("PRAGMA integrity_check").unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Every key, alias and ciphertext of `acked` as promised; the problems.
fn verify(c: &mut Client, acked: &Acked) -> Vec<String> {
    let mut wrong = Vec::new();
    let ids: Vec<&String> = acked.keys.keys().collect();
    for chunk in ids.chunks(100) {
        let ops = chunk
            .iter()
            .map(|id| {
                Operation::DescribeKey(DescribeKey {
                    key_id: id,
                    ..Default::default()
                })
            })
            .collect();
        let out = c.batch(ops).expect("DescribeKey batch");
        for (id, o) in chunk.iter().zip(out) {
            let want = &acked.keys[*id];
            match o {
                Ok(Output::DescribeKey(m)) => {
                    if rank(m.key_state) < rank(want.state) {
                        wrong.push(format!(
                            "key {id}: state {:?}, acknowledged {:?}",
                            m.key_state, want.state
                        ));
                    }
                    if m.current_version < 1 + want.rotations {
                        wrong.push(format!(
                            "key {id}: version {}, acknowledged {} rotations",
                            m.current_version, want.rotations
                        ));
                    }
                }
                other => wrong.push(format!("key {id}: {other:?}")),
            }
        }
    }
    // Every alias, in pages.
    let mut found: HashMap<String, String> = HashMap::new();
    let mut marker: Option<String> = None;
    loop {
        let page = match call(
            c,
            Operation::ListAliases(ListAliases {
                key_id: None,
                limit: 1000,
                marker: marker.as_deref(),
            }),
        ) {
            Ok(Output::ListAliases(p)) => p,
            other => {
                wrong.push(format!("ListAliases: {other:?}"));
                break;
            }
        };
        for a in page.aliases {
            if let Some(t) = a.target_key_id {
                found.insert(a.alias_name, t);
            }
        }
        if !page.truncated {
            break;
        }
        marker = page.next_marker;
    }
    for (name, key) in &acked.aliases {
        if found.get(name) != Some(key) {
            wrong.push(format!(
                "alias {name}: names {:?}, acknowledged {key}",
                found.get(name)
            ));
        }
    }
    for chunk in acked.blobs.chunks(200) {
        let ops = chunk
            .iter()
            .map(|(_, blob, _)| {
                Operation::Decrypt(Decrypt {
                    ciphertext_blob: blob,
                    key_id: None,
                    context: vec![("crash", "test")],
                    ..Default::default()
                })
            })
            .collect();
        let out = c.batch(ops).expect("Decrypt batch");
        for ((key, _, pt), o) in chunk.iter().zip(out) {
            match o {
                Ok(Output::Decrypt(d))
                    if d.plaintext.expose() == &pt[..]
                        && d.key_id == crate::support::key_arn(key) => {}
                Ok(Output::Decrypt(_)) => wrong.push(format!(
                    "a ciphertext under {key} decrypts to something else"
                )),
                other => wrong.push(format!("a ciphertext under {key}: {other:?}")),
            }
        }
    }
    wrong
}

/// A config for the crash test: rotations and aliases without AWS's limits
/// per key (25, 50) in the way of thousands of changes.
fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("crash.toml");
    std::fs::write(
        &path,
        "[limits]\nmax_on_demand_rotations = 1000\nmax_aliases_per_key = 10000\n",
    )
    .unwrap();
    path
}

#[test]
fn acknowledged_changes_survive_kill_9() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let conf_dir = tempfile::tempdir().unwrap();
    let conf = config(conf_dir.path());
    let mut d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let db = d.data_dir.join("keys.db");
    let shared = Arc::new(Shared {
        acked: Mutex::new(Acked::default()),
        gate: Mutex::new((0, 0)),
        moved: Condvar::new(),
        stop: AtomicBool::new(false),
        unexpected: Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let shared = Arc::clone(&shared);
            let socket = d.socket.clone();
            std::thread::spawn(move || client(n, seed, &socket, &shared))
        })
        .collect();
    let fail = |d: &Daemon, what: String| -> ! {
        panic!(
            "KMSD_CRASH_SEED={seed}: {what}\nlog (last 4000 bytes):\n{}",
            {
                let log = d.log();
                log[log.len().saturating_sub(4000)..].to_owned()
            }
        )
    };
    for kill in 0..KILLS {
        // Let the clients work, then kill -9 mid-flight.
        std::thread::sleep(Duration::from_millis(rng.random_range(30..500)));
        d.kill();
        // Every client has noticed and parked: nothing more is
        // acknowledged until the daemon is up again.
        {
            let mut g = shared.gate.lock();
            let deadline = Instant::now() + Duration::from_secs(30);
            while g.1 < CLIENTS {
                if shared.moved.wait_until(&mut g, deadline).timed_out() {
                    drop(g);
                    fail(&d, "the clients did not notice the kill".into());
                }
            }
        }
        let acked = shared.acked.lock().clone();
        let check = integrity(&db);
        if check != ["ok"] {
            fail(&d, format!("kill {kill}: integrity_check: {check:?}"));
        }
        d.restart();
        let mut c = d.client();
        let wrong = verify(&mut c, &acked);
        if !wrong.is_empty() {
            fail(
                &d,
                format!(
                    "kill {kill}: {} acknowledged changes lost or wrong:\n{}",
                    wrong.len(),
                    wrong.join("\n")
                ),
            );
        }
        let unexpected = shared.unexpected.lock().clone();
        if !unexpected.is_empty() {
            fail(&d, format!("unexpected refusals: {unexpected:?}"));
        }
        eprintln!(
            "kill {kill}: {} keys, {} aliases, {} ciphertexts, all there ({:.1} s)",
            acked.keys.len(),
            acked.aliases.len(),
            acked.blobs.len(),
            started.elapsed().as_secs_f64()
        );
        let mut g = shared.gate.lock();
        g.0 += 1;
        shared.moved.notify_all();
    }
    shared.stop.store(true, Ordering::SeqCst);
    shared.moved.notify_all();
    for t in threads {
        t.join().unwrap();
    }
    let acked = shared.acked.lock().clone();
    // The run did what it claims: changes of every kind were acknowledged.
    let rotated = acked.keys.values().filter(|k| k.rotations > 0).count();
    let disabled = acked
        .keys
        .values()
        .filter(|k| k.state != KeyState::Enabled)
        .count();
    assert!(
        acked.keys.len() >= 8 && !acked.aliases.is_empty() && rotated > 0 && disabled > 0,
        "KMSD_CRASH_SEED={seed}: too little happened: {} keys, {} aliases, {rotated} rotated, \
         {disabled} disabled or pending deletion, {} ciphertexts",
        acked.keys.len(),
        acked.aliases.len(),
        acked.blobs.len()
    );
    d.stop();
}

/// What a store holds after a kill: (schema version, whether it has the
/// version 2 columns, keys).
fn store_after_kill(db: &Path) -> (String, bool, i64) {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let version: Vec<u8> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let v2_columns: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('keys') WHERE name IN \
             ('deletion_date', 'rotation_period_days', 'valid_to')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let keys: i64 = conn
        .query_row("SELECT count(*) FROM keys", [], |r| r.get(0))
        .unwrap();
    let version = String::from_utf8(version).unwrap();
    match (version.as_str(), v2_columns) {
        ("1", 0) => (version, false, keys),
        (v, 3) if v == super::store_open::current_schema() => (version, true, keys),
        other => panic!("a store between versions: {other:?}"),
    }
}

/// Kills during the start-up of a daemon on a version 1 store, while the
/// upgrade runs: the test watches the store's write lock (at start-up only
/// the upgrade's transaction takes it: the store is in WAL mode and bound
/// to its root already) and kills the daemon the moment it sees the lock
/// taken. Each kill leaves the store whole (integrity_check ok) at version
/// 1, or at version 2 if the upgrade committed in between, never between;
/// at least one kill must land inside the upgrade (version 1 after it).
/// Then kills at random moments of start-up, and the start that completes
/// has upgraded the store with every key and ciphertext intact.
#[test]
fn kills_during_a_v1_upgrade_leave_a_whole_store() {
    let seed = seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut d = Daemon::start(&[]);
    let mut c = d.client();
    let ids: Vec<String> = (0..20)
        .map(|_| c.create_key("before the upgrade").unwrap().key_id)
        .collect();
    let blob = c.encrypt(&ids[7], b"before the upgrade", &[]).unwrap();
    drop(c);
    d.stop();
    crate::store_open::downgrade_to_v1(&d.data_dir);
    let db = d.data_dir.join("keys.db");
    // Many more keys (rows only: never loaded), so that the upgrade's
    // scans of the keys table take a while.
    {
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
             INSERT INTO keys SELECT randomblob(16), 1700000000, 'filler', 'Enabled', 'KMSD', 1
                 FROM n;
             COMMIT;",
        )
        .unwrap();
    }
    let total = 60_000 + ids.len() as i64;
    // The version 1 store as it is now, to go back to after a start that
    // upgraded it.
    let pristine = d.dir.path().join("keys-v1-pristine.db");
    std::fs::copy(&db, &pristine).unwrap();
    let back_to_v1 = || {
        for f in ["keys.db-wal", "keys.db-shm"] {
            let _ = std::fs::remove_file(d.data_dir.join(f));
        }
        std::fs::copy(&pristine, &db).unwrap();
    };
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_kmsd"))
            .arg("serve")
            .arg("--socket")
            .arg(&d.socket)
            .arg("--data-dir")
            .arg(&d.data_dir)
            .env("KMSD_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut inside = 0;
    let mut after = 0;
    for attempt in 0..20 {
        if inside >= 3 {
            break;
        }
        let probe = Connection::open(&db).unwrap();
        probe.busy_timeout(Duration::ZERO).unwrap();
        let mut child = spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        // The write lock, taken by the upgrade's IMMEDIATE transaction.
        let seen = loop {
            if probe.execute_batch("BEGIN IMMEDIATE; ROLLBACK;").is_err() {
                break true;
            }
            if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
                break false;
            }
            let (v, _, _) = store_after_kill(&db);
            if v == super::store_open::current_schema() {
                break false; // upgraded between two looks: try again
            }
        };
        child.kill().unwrap();
        child.wait().unwrap();
        drop(probe);
        assert_eq!(integrity(&db), ["ok"], "KMSD_CRASH_SEED={seed}");
        let (v, _, keys) = store_after_kill(&db);
        assert_eq!(keys, total, "KMSD_CRASH_SEED={seed}: every key is there");
        match (seen, v.as_str()) {
            (true, "1") => inside += 1,
            (_, v) if v == super::store_open::current_schema() => {
                after += 1;
                back_to_v1();
            }
            _ => {}
        }
        eprintln!("attempt {attempt}: lock seen {seen}, version {v} after the kill");
    }
    assert!(
        inside >= 1,
        "KMSD_CRASH_SEED={seed}: no kill landed inside the upgrade ({after} after it)"
    );
    // Kills at random moments of start-up.
    for _ in 0..4 {
        let mut child = spawn();
        std::thread::sleep(Duration::from_micros(rng.random_range(0..80_000)));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(integrity(&db), ["ok"], "KMSD_CRASH_SEED={seed}");
        assert_eq!(store_after_kill(&db).2, total, "KMSD_CRASH_SEED={seed}");
    }
    d.restart();
    assert_eq!(store_after_kill(&db).0, super::store_open::current_schema());
    let mut c = d.client();
    for id in &ids {
        assert_eq!(c.describe_key(id).unwrap().key_state, KeyState::Enabled);
    }
    let out = c.decrypt(&blob.ciphertext_blob, None, &[]).unwrap();
    assert_eq!(out.plaintext.expose(), b"before the upgrade");
}
